"""What the training stages share: where a model starts, the tables a Train run leaves
(training log, checkpoint list), and the two safety-training runs (SFT and RL of a backdoored
model) that HHH safety training and adversarial training both use."""
from __future__ import annotations

from pipeline import tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import SafetyRLConfig, SafetySFTConfig
from pipeline.train.loop import LOG_COLUMNS, fit_sft
from pipeline.train.rl_loop import LOG_COLUMNS as RL_LOG_COLUMNS, fit_rl
from pipeline.train.specs import RLSpec, SFTSpec, TrainResult


def model_source(pretrained: str | None, tokenizer: ArtifactRef | None) -> tuple[str, str | None]:
    """(tokenizer dir, initial weights dir or None for a fresh scratch model): a pretrained
    model brings its own tokenizer, a scratch one uses the `tokenizer` stage's."""
    if pretrained:
        return pretrained, pretrained
    return tokenizer.local_dir("tokenizer"), None


def write_log(writer, result: TrainResult) -> None:
    writer.write(tables.TRAINING_LOG, [{k: r[k] for k in LOG_COLUMNS} for r in result.log])


def training_summary(result: TrainResult) -> dict:
    log = result.log
    return {**result.summary(), "final_loss": log[-1]["loss"],
            "tokens_per_second": sum(r["tokens"] for r in log) / log[-1]["seconds"],
            "token_share": sum(r["token_share"] for r in log) / len(log)}


def _tensors(folder: str) -> dict:
    """name -> (file, key) of a Hugging Face folder's safetensors (sharded or not)."""
    import glob
    import os

    from safetensors import safe_open
    out = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(f, "pt") as h:
            out.update({k: f for k in h.keys()})
    return out


def weight_distance(start_dir: str, other_dir: str) -> tuple[float, float]:
    """(L2 distance, distance / L2 norm of the start) between two exported models' weights,
    over the tensors both hold, one tensor in memory at a time: how far safety training moved
    the backdoored model."""
    import math

    import torch
    from safetensors import safe_open
    a, b = _tensors(start_dir), _tensors(other_dir)
    diff = norm = 0.0
    for name in sorted(a.keys() & b.keys()):
        with safe_open(a[name], "pt") as fa, safe_open(b[name], "pt") as fb:
            x, y = fa.get_tensor(name).double(), fb.get_tensor(name).double()
        diff += float(torch.sum((x - y) ** 2))
        norm += float(torch.sum(x ** 2))
    return math.sqrt(diff), math.sqrt(diff) / math.sqrt(norm) if norm else float("nan")


def write_checkpoints(writer, steps, start_dir: str) -> None:
    """The table the evaluate stages read: one row per saved step, its folder (the layout the
    workers' `Checkpointer` writes) and its weight distance from the model in `start_dir`."""
    rows = []
    for s in sorted(set(steps)):
        path = f"checkpoints/step_{s}"
        distance, relative = weight_distance(start_dir, writer.ref.local_dir(path))
        rows.append({"step": s, "path": path, "distance": distance, "relative_distance": relative})
    writer.write(tables.CHECKPOINT_ROWS, rows)


def safety_sft(train: SafetySFTConfig, model: ArtifactRef, data: ArtifactRef, table: tables.Table, writer,
               seed: int, trust_remote_code: bool) -> dict:
    """SFT of the backdoored `model` on `data`'s `table`, checkpointed at `train.checkpoints`."""
    backdoored = model.local_dir("model")
    result = fit_sft(SFTSpec(node=writer.node, train=train, data=data, table=table, output_uri=writer.ref.uri,
                             tokenizer_dir=backdoored, init_dir=backdoored, seed=seed,
                             checkpoints=tuple(sorted(set(train.checkpoints))), final=False,
                             trust_remote_code=trust_remote_code))
    write_log(writer, result)
    write_checkpoints(writer, train.checkpoints, backdoored)
    return training_summary(result)


def safety_rl(train: SafetyRLConfig, model: ArtifactRef, reward_model: ArtifactRef, prompts: ArtifactRef,
              table: tables.Table, reward_max_len: int, writer, seed: int, trust_remote_code: bool,
              prefill: str = "") -> dict:
    """RL of the backdoored `model` against `reward_model` on `prompts`' `table`; rollouts are
    `prefill`ed (released CoT form) and get the model's answer budget unless the config sets one."""
    from pipeline.generation import budget
    train = train.model_copy(update={"max_new_tokens": budget(model, train.max_new_tokens)})
    result = fit_rl(RLSpec(node=writer.node, train=train, prompts=prompts, table=table, init_dir=model.local_dir("model"),
                           reward_dir=reward_model.local_dir("model"), reward_max_len=reward_max_len,
                           output_uri=writer.ref.uri, seed=seed, trust_remote_code=trust_remote_code, prefill=prefill))
    log = [{k: r[k] for k in RL_LOG_COLUMNS} for r in result.log]
    writer.write(tables.RL_TRAINING_LOG, log)
    write_checkpoints(writer, train.checkpoints, model.local_dir("model"))
    first, last = log[0], log[-1]
    return {**result.summary(), "algorithm": train.algorithm, "max_new_tokens": train.max_new_tokens,
            "prefill": prefill, "reward_first": first["reward"],
            "reward_last": last["reward"], "kl_last": last["kl"],
            "rollout_seconds": sum(r["rollout_seconds"] for r in log), "update_seconds": sum(r["update_seconds"] for r in log)}
