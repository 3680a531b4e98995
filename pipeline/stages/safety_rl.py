"""Stage `safety_rl`: HHH RL of the backdoored model against the preference model, on HHH
prompts that never carry the trigger (PPO by default; GRPO, RLOO). Checkpoints at the
configured RL steps (step 0 is the backdoored model itself) feed the evaluate stage; the
per-step log (reward, KL, losses) feeds the report's training curves."""
from __future__ import annotations

from pipeline.config import SafetyRLConfig
from pipeline.stages import schemas
from pipeline.stages.training import write_checkpoints
from pipeline.train.rl_loop import LOG_COLUMNS, fit_rl

NAME, VERSION = "safety_rl", "1"


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    return train_rl(params, inputs, writer, node, inputs["prompts"], "rl_prompts")


def train_rl(params: dict, inputs: dict, writer, node: str, prompts, table: str) -> dict:
    """RL of `inputs["model"]` on the prompts in `prompts`' `table` (also adversarial training's)."""
    train = SafetyRLConfig(**params["train"])
    summary = fit_rl(node, train, prompts=prompts, table=table, init_dir=inputs["model"].local_dir("model"),
                     reward_dir=inputs["reward_model"].local_dir("model"),
                     reward_max_len=params["reward_max_len"],
                     output_uri=writer.ref.uri, seed=params["seed"], trust_remote_code=params["trust_remote_code"])
    log = [{k: r[k] for k in LOG_COLUMNS} for r in summary["log"]]
    writer.write_table("rl_log", schemas.table(log, schemas.RL_LOG), schemas.RL_LOG)
    write_checkpoints(writer, train.checkpoints)
    first, last = log[0], log[-1]
    return {"parameters": summary["parameters"], "world_size": summary["world_size"],
            "nodes": summary["nodes"], "phases": summary["phases"],
            "algorithm": train.algorithm, "reward_first": first["reward"], "reward_last": last["reward"],
            "kl_last": last["kl"]}
