"""Stage `reward_model`: the HHH preference model (Bradley-Terry on the `preferences` pairs,
DeepSpeed under Ray Train), saved as a Hugging Face sequence-classification folder, with
its accuracy on held-out pairs per failure mode."""
from __future__ import annotations

from pipeline.config import ModelConfig, RewardModelConfig
from pipeline.stages import schemas
from pipeline.stages.backdoor import model_source
from pipeline.stages.training import training_summary, write_log
from pipeline.train.reward import fit_reward_model
from evals.stats import rate_with_ci

NAME, VERSION = "reward_model", "1"


def accuracy_rows(accuracy: dict) -> list[dict]:
    """One row per failure mode and one for all pairs: the share ranked right, with a
    Wilson interval, and the mean score margin chosen - rejected."""
    cells = dict(accuracy)
    cells["all"] = {"k": sum(c["k"] for c in accuracy.values()), "n": sum(c["n"] for c in accuracy.values()),
                    "margin_sum": sum(c["margin_sum"] for c in accuracy.values())}
    return [{"failure": m, **rate_with_ci(c["k"], c["n"]), "margin": c["margin_sum"] / c["n"]}
            for m, c in sorted(cells.items())]


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    model = ModelConfig(**params["model"])
    train = RewardModelConfig(**params["train"])
    tokenizer_dir, init_dir = model_source(model, inputs)
    summary = fit_reward_model(node, train, data=inputs["data"], output_uri=writer.ref.uri,
                               tokenizer_dir=tokenizer_dir, init_dir=init_dir, preset=train.preset,
                               seed=params["seed"], trust_remote_code=model.trust_remote_code,
                               chat_template=model.chat_template)
    write_log(writer, summary)
    rows = accuracy_rows(summary["accuracy"])
    writer.write_table("accuracy", schemas.table(rows, schemas.PM_ACCURACY), schemas.PM_ACCURACY)
    overall = next(r for r in rows if r["failure"] == "all")
    return {**training_summary(summary), "held_out_accuracy": overall["rate"], "held_out_pairs": overall["n"]}
