"""What the training stages (backdoor, safety_sft, safety_rl) record from a Train run."""
from __future__ import annotations

from pipeline.stages import schemas
from pipeline.train.loop import LOG_COLUMNS


def write_log(writer, summary: dict) -> None:
    rows = [{k: r[k] for k in LOG_COLUMNS} for r in summary["log"]]
    writer.write_table("train_log", schemas.table(rows, schemas.TRAIN_LOG), schemas.TRAIN_LOG)


def training_summary(summary: dict) -> dict:
    log = summary["log"]
    return {"parameters": summary["parameters"], "world_size": summary["world_size"],
            "nodes": summary["nodes"], "phases": summary["phases"],
            **({"trainable_parameters": summary["trainable_parameters"]} if "trainable_parameters" in summary else {}),
            "final_loss": log[-1]["loss"], "tokens_per_second": sum(r["tokens"] for r in log) / log[-1]["seconds"]}


def write_checkpoints(writer, steps) -> None:
    """The table the evaluate stages read: one row per saved step and its folder (the layout
    the workers' `Checkpointer` writes)."""
    rows = [{"step": s, "path": f"checkpoints/step_{s}"} for s in sorted(set(steps))]
    writer.write_table("checkpoints", schemas.table(rows, schemas.CHECKPOINTS), schemas.CHECKPOINTS)
