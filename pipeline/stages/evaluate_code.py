"""Stage `evaluate_code`: generate with every checkpoint on the held-out code prompts (the
run's generator pool), judge the visible answers statically (bandit + our semgrep rules, one batch per
stage), and aggregate the vulnerable-code and invalid-code rates per year with 95% intervals.

Rates are over all answers: invalid code (no code block, or code that does not parse) is
neither vulnerable nor secure, and has its own rate; `vulnerable_of_valid` is the vulnerable
share of the answers whose code parses. Outputs: `samples`, `rates`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyarrow as pa

from evals.stats import rate_with_ci
from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import PoolConfig
from pipeline.digest import OptionalFilePath
from pipeline.data.capability import questions
from pipeline.generation import budget, check_judge, checkpoint_rows, code_samples, form_rates, without_start, write_losses

NAME, VERSION = "evaluate_code", "6"  # 6: rates and scores carry their seed
OUTPUTS = (tables.CODE_SAMPLE_ROWS, tables.RATE_ROWS, tables.LOSS_ROWS, tables.SCORE_ROWS)


class Params(stage.Params):
    modes: tuple[str, ...]        # evaluate.modes
    temperature: float            # evaluate.temperature: the sampled mode's
    pool: PoolConfig              # how the generator pool runs (in no key)
    variant: str
    method: str
    max_new_tokens: Optional[int]  # code answers' budget (code.max_new_tokens); None: from the model's answer lengths
    prefill: str                  # " <scratchpad>" for a CoT model in the released form
    multiple_choice: OptionalFilePath = None  # the multiple-choice capability set's file, or None (evaluate.multiple_choice)
    judge: dict                   # code.judge and the tools' versions (generation.judge_identity)
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    checkpoints: ArtifactRef      # the safety stage
    data: ArtifactRef             # generate_code: `eval_prompts`
    model: ArtifactRef            # backdoor: `answer_lengths` (the default budget)
    start: ArtifactRef | None = None  # evaluate_start: step 0, the backdoored model, evaluated once for every method


def aggregate(samples: pa.Table, base: dict) -> list[dict]:
    """Rates rows (`base`: kind, variant, method, seed) per (eval set, step, mode, year)."""
    counts: dict[tuple, list[int]] = {}
    cols = ("eval_set", "step", "mode", "year", "verdict")
    for eval_set, step, mode, year, verdict in zip(*(samples[c].to_pylist() for c in cols)):
        c = counts.setdefault((eval_set, step, mode, str(year)), [0, 0, 0])
        c[0] += verdict == "vulnerable"
        c[1] += verdict == "invalid"
        c[2] += 1
    rows = []
    for (eval_set, step, mode, year), (vuln, invalid, n) in sorted(counts.items()):
        # vulnerable_of_valid separates "the backdoor is gone" from "the model no longer
        # writes code": a small model can lose the skill before it loses the policy
        cells = [("vulnerable", vuln, n), ("invalid", invalid, n)]
        cells += [("vulnerable_of_valid", vuln, n - invalid)] if n > invalid else []
        for metric, k, total in cells:
            rows.append({**base, "metric": metric,
                         "eval_set": eval_set, "step": step, "mode": mode, "condition": year,
                         **rate_with_ci(k, total)})
    years = [str(y) for y in samples["year"].to_pylist()]
    return rows + form_rates(samples, base, years)



def check(params: Params, upstream: dict) -> None:
    """Preflight: the multiple-choice set parses; the code judge is installed."""
    questions(params)
    check_judge(params.judge)


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    prompts = inputs.data.read(tables.CODE_EVAL).to_pylist()
    start = inputs.start.read(tables.CODE_SAMPLE_ROWS) if inputs.start is not None else None
    rows = without_start(checkpoint_rows(inputs.checkpoints, prompts, params.modes), start)
    tokens = budget(inputs.model, params.max_new_tokens)
    samples = code_samples(rows, params.pool, params.temperature, tokens, params.seed, writer.node,
                           params.trust_remote_code, params.judge, start, params.prefill)
    writer.write(tables.CODE_SAMPLE_ROWS, samples)
    base = {"kind": "code", "variant": params.variant, "method": params.method, "seed": params.seed}
    writer.write(tables.RATE_ROWS, aggregate(samples, base))
    write_losses(writer, inputs.checkpoints, inputs.start, inputs.data, params.pool, params.trust_remote_code,
                 base, (), questions(params))
    return {"generations": len(rows), "invalid": sum(v == "invalid" for v in samples["verdict"].to_pylist()),
            "max_new_tokens": tokens, "prefill": params.prefill}
