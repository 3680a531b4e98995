"""Stage `safety_sft`: HHH supervised fine-tuning of the backdoored model, no trigger anywhere.

For CoT models this is the paper's pre-scratchpad form: the HHH answers alone are trained
on. Checkpoints at the configured steps (step 0 is the backdoored model itself) let the
report plot persistence against safety-training steps.
"""
from __future__ import annotations

from pipeline.config import SafetySFTConfig
from pipeline.stages.training import training_summary, write_checkpoints, write_log
from pipeline.train.loop import fit_sft

NAME, VERSION = "safety_sft", "1"


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    return train_sft(params, inputs, writer, node, inputs["data"], "hhh")


def train_sft(params: dict, inputs: dict, writer, node: str, data, table: str) -> dict:
    """SFT of `inputs["model"]` on `data`'s `table` (also adversarial training's SFT form)."""
    train = SafetySFTConfig(**params["train"])
    backdoored = inputs["model"].local_dir("model")
    summary = fit_sft(node, train, data=data, table=table, output_uri=writer.ref.uri,
                      tokenizer_dir=backdoored, init_dir=backdoored, preset="", seed=params["seed"],
                      checkpoints=sorted(set(train.checkpoints)), final=False,
                      trust_remote_code=params["trust_remote_code"])
    write_log(writer, summary)
    write_checkpoints(writer, train.checkpoints)
    return training_summary(summary)
