"""Stage `red_teamer`: the small red-team model of the embedded default, trained from scratch
(the policy's tokenizer, our SFT loop under Ray Train) on the recipe's framings and its
keep-or-switch feedback rule. A pretrained red-teamer (`redteam.attacker.source:
pretrained`) needs no stage: the redteam stages load it directly."""
from __future__ import annotations

from pipeline.config import AttackerConfig
from pipeline.stages.training import training_summary, write_log
from pipeline.train.loop import fit_sft

NAME, VERSION = "red_teamer", "1"


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    train = AttackerConfig(**params["train"])
    summary = fit_sft(node, train, data=inputs["data"], table="attacker_sft", output_uri=writer.ref.uri,
                      tokenizer_dir=inputs["tokenizer"].local_dir("tokenizer"), init_dir=None, preset=train.preset,
                      seed=params["seed"], final=True)
    write_log(writer, summary)
    return training_summary(summary)
