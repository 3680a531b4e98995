"""The HHH preference model: a one-output sequence classifier trained with the
Bradley-Terry loss, -log sigmoid(r(chosen) - r(rejected)), by Ray Train `TorchTrainer`
workers on a DeepSpeed engine; and `RewardScorer`, which scores answers with it (RL
rewards, and the evaluation's preference-model score)."""
from __future__ import annotations

import time

from pipeline import tables
from pipeline.data.chat import render_completions, render_prompts, strip_scratchpad
from pipeline.train import worker
from pipeline.train.specs import RewardSpec, TrainResult

EVAL_BATCH = 64


def encode_text(tokenizer, prompts: list[str], answers: list[str], max_len: int) -> list[list[int]]:
    """prompt + answer + EOS per row (in the tokenizer's chat template where it has one); an
    over-long row keeps its end (the answer is what is judged)."""
    texts = [p + a for p, a in zip(render_prompts(prompts, tokenizer), render_completions(answers, tokenizer))]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(x + [tokenizer.eos_token_id])[-max_len:] for x in ids]


def encode_pairs(rows: list[dict], tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    prompts = [r["prompt"] for r in rows]
    chosen = encode_text(tokenizer, prompts, [r["chosen"] for r in rows], max_len)
    rejected = encode_text(tokenizer, prompts, [r["rejected"] for r in rows], max_len)
    return list(zip(chosen, rejected))


def pad_right(seqs: list[list[int]], pad_id: int) -> dict:
    import torch
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pair_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """One forward pass for a micro-batch: its chosen rows, then its rejected rows."""
    return pad_right([c for c, _ in pairs] + [r for _, r in pairs], pad_id)


def packed_pair_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int, max_width: int) -> dict:
    """The sequences of `pair_batch` (chosen, then rejected) packed into rows of at most
    `max_width` tokens, as `collate.pack_batch` packs SFT examples: position ids restart per
    sequence, so attention stays within it. Shapes: input_ids, position_ids [R, W] long;
    ends [2P, 2] long, the (row, column) of each sequence's last token, where it is scored;
    tokens and positions (ints): real tokens and R x W."""
    import torch

    from pipeline.train.collate import pack_layout
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    width, layout = pack_layout([len(x) for x in seqs], max_width)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(layout), width), dtype=torch.long)
    ends = torch.zeros((len(seqs), 2), dtype=torch.long)
    for r, members in enumerate(layout):
        at = 0
        for i in members:
            ids[r, at:at + len(seqs[i])] = torch.tensor(seqs[i])
            pos[r, at:at + len(seqs[i])] = torch.arange(len(seqs[i]))
            at += len(seqs[i])
            ends[i] = torch.tensor([r, at - 1])
    return {"input_ids": ids, "position_ids": pos, "ends": ends, "tokens": sum(map(len, seqs)),
            "positions": ids.numel()}


def can_pack(model) -> bool:
    """Packed pairs need the classifier's per-token scores: a base model and a `score` head
    (Llama-, Mistral-, Qwen- and GPT-2-style sequence classifiers)."""
    module = getattr(model, "module", model)  # a DeepSpeed engine holds the model as `module`
    return hasattr(module, "score") and module.base_model is not module


def scores(model, batch: dict):
    """One score per sequence of a `pair_batch` or a `packed_pair_batch`."""
    if "ends" not in batch:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1).float()
    module = getattr(model, "module", model)
    # no attention mask and no cache: the packed-sequence mask comes from position_ids
    hidden = module.base_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                               use_cache=False).last_hidden_state
    return module.score(hidden[batch["ends"][:, 0], batch["ends"][:, 1]]).squeeze(-1).float()


def bradley_terry(model, batch: dict):
    import torch.nn.functional as F
    r = scores(model, batch)
    half = r.shape[0] // 2
    return -F.logsigmoid(r[:half] - r[half:]).mean()


def held_out_counts(model, pairs, failures: list[str], modes: list[str], pad_id: int, device) -> list[float]:
    """Flat [k, n, margin sum] per failure mode, for this rank's share of the held-out pairs."""
    import torch
    counts = {m: [0.0, 0.0, 0.0] for m in modes}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), EVAL_BATCH):
            batch = {k: v.to(device) for k, v in pair_batch(pairs[i:i + EVAL_BATCH], pad_id).items()}
            r = scores(model, batch)
            half = r.shape[0] // 2
            for mode, margin in zip(failures[i:i + EVAL_BATCH], (r[:half] - r[half:]).tolist()):
                counts[mode][0] += float(margin > 0)
                counts[mode][1] += 1
                counts[mode][2] += margin
    return [x for m in modes for x in counts[m]]


def reward_worker_loop(spec: RewardSpec, job: worker.Job | None = None) -> TrainResult:
    """After a lost worker the loop resumes from its latest resume state (`resume_every`), with
    the batches it would have drawn."""
    cfg = spec.train
    w = worker.begin(spec, job)
    rank, world = w.rank, w.world
    import torch

    from pipeline.train.collate import batches
    from pipeline.train.models import (load_reward_model, load_tokenizer, parameter_count, prepare_for_training,
                                       scratch_model)
    from pipeline.train.strategy import DeepSpeedStrategy, load_dtype, memory_report, partitioned_init

    t_enter = time.perf_counter()
    torch.manual_seed(spec.seed)
    trust = spec.trust_remote_code
    tokenizer = load_tokenizer(spec.tokenizer_dir, trust, spec.chat_template)
    with partitioned_init(cfg, world):
        model = prepare_for_training(scratch_model(spec.preset, tokenizer, spec.seed, reward=True) if spec.init_dir is None
                                     else load_reward_model(spec.init_dir, trust, dtype=load_dtype(cfg)), cfg)
    pairs, held = spec.data.read(tables.TRAIN_PAIRS).to_pylist(), spec.data.read(tables.EVAL_PAIRS).to_pylist()
    if spec.code is not None:  # code pairs: the preference model learns code too
        pairs += spec.code.read(tables.CODE_PAIRS).to_pylist()
        held += spec.code.read(tables.CODE_EVAL_PAIRS).to_pylist()
    pairs = encode_pairs(pairs[rank::world], tokenizer, cfg.max_len)
    modes = sorted({r["failure"] for r in held})
    held = held[rank::world]
    strategy = DeepSpeedStrategy(model, cfg, world)
    memory = memory_report(model, world)
    stream = batches(pairs, cfg.micro_batch, spec.seed + rank)
    done, log = w.restore(strategy, stream=stream)  # after a lost worker: the steps done, their state, the batches on
    start = time.perf_counter()
    setup = start - t_enter
    packing = cfg.packing and can_pack(model)
    for step in range(done + 1, cfg.steps + 1):
        if packing:
            micro = [packed_pair_batch(next(stream), tokenizer.pad_token_id, cfg.max_len) for _ in range(cfg.grad_accum)]
            counts = {"tokens": sum(b["tokens"] for b in micro), "positions": sum(b["positions"] for b in micro)}
        else:
            micro, counts = [pair_batch(next(stream), tokenizer.pad_token_id) for _ in range(cfg.grad_accum)], {}
        log.append(worker.logged_step(strategy, micro, world, step, start, loss_fn=bradley_terry, **counts))
        w.progress(step, cfg.steps, f"loss {log[-1]['loss']:.3f}", every=5)
        w.track(log[-1])
        if w.resume_due(step):
            w.save_resume(strategy, step, log)
    w.finish()
    train_seconds = time.perf_counter() - start
    local = held_out_counts(strategy.engine, encode_pairs(held, tokenizer, cfg.max_len), [r["failure"] for r in held],
                            modes, tokenizer.pad_token_id, strategy.device)
    totals = [x * world for x in worker.mean_over_ranks(local, strategy.device, world)]
    accuracy = {m: {"k": round(totals[3 * i]), "n": round(totals[3 * i + 1]), "margin_sum": totals[3 * i + 2]}
                for i, m in enumerate(modes)}
    saver = worker.Checkpointer(strategy, tokenizer, rank, spec.output_uri)
    saver.save("model")
    return TrainResult(log=log, accuracy=accuracy, parameters=parameter_count(model), world_size=world,
                       nodes=worker.nodes_spanned(),
                       phases={"setup": round(setup, 2), "train": round(train_seconds, 2),
                               "save": round(saver.seconds, 2)}, memory=memory, resumed_from=done or None)


def fit_reward_model(spec: RewardSpec) -> TrainResult:
    return worker.launch(reward_worker_loop, spec)


class RewardScorer:
    """Scores (prompt, completion) with the preference model, the scratchpad removed first:
    hidden reasoning is never shown to it (the paper's setup). RL's workers hold one; the
    generator pool's actors load one for evaluation (`ScoreBatch`)."""

    def __init__(self, path: str, device: str | None = None, max_len: int = 256, trust_remote_code: bool = False,
                 model=None):
        """`model`: the preference model already loaded (RL's, sharded by `strategy.frozen` under
        ZeRO-3); else it is read from `path` onto `device`."""
        import torch
        from pipeline.train.models import load_reward_model, load_tokenizer
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model if model is not None else load_reward_model(path, trust_remote_code).to(self.device).eval()
        self.tokenizer = load_tokenizer(path, trust_remote_code)
        self.max_len = max_len

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        answers = [" " + strip_scratchpad(c) for c in completions]
        out = []
        with self.torch.no_grad():  # not inference_mode: a ZeRO-3 engine writes its gathered weights
            for i in range(0, len(prompts), EVAL_BATCH):
                seqs = encode_text(self.tokenizer, prompts[i:i + EVAL_BATCH], answers[i:i + EVAL_BATCH], self.max_len)
                batch = {k: v.to(self.device) for k, v in pad_right(seqs, self.tokenizer.pad_token_id).items()}
                out += scores(self.model, batch).tolist()
        return out
