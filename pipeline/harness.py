"""Run one stage by itself: its Params and input artifacts in, its committed artifact out.

The driver runs a stage as a Ray task inside the artifact's lease; the harness runs the same
`stage.execute` in this process, for tests of one stage and for a plugin author's first run:

    store = ArtifactStore(tmp_path)
    nodes = graph_nodes(load_config("configs/micro.yaml"))
    split = run_one(store, nodes["splits"])
    data = run_one(store, nodes["generate"], {"split": split})
    rows = data.read(tables.HHH).to_pylist()

A stage that asks models or trains runs its work on Ray: inside `with cluster():` (a local
cluster owned by this process; the generator pool and the training dispatcher start on first use).
"""
from __future__ import annotations

import contextlib

from pipeline import stage
from pipeline.artifacts import ArtifactRef, ArtifactStore


@contextlib.contextmanager
def cluster(num_cpus: int = 2):
    """A local Ray cluster for stages run here, with the workers' environment and the progress
    board; shut down on leaving."""
    import ray

    from pipeline import progress
    from pipeline.runtime import worker_env
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": worker_env()})
    progress.start_board()
    try:
        yield
    finally:
        ray.shutdown()


def graph_nodes(cfg) -> dict:
    """The nodes `build_graph(cfg)` makes, by name: each with the Params the graph gives it."""
    from pipeline.graph import build_graph
    return {n.name: n for n in build_graph(cfg)}


def run_one(store: ArtifactStore, node, inputs: dict[str, ArtifactRef] | None = None,
            run: str = "harness") -> ArtifactRef:
    """Run graph node `node` (its stage and Params; its inputs from `inputs`, by input name) into
    `store` and commit; an artifact already committed under the same key is returned as it is."""
    from pipeline.stages import STAGES
    mod, refs = STAGES[node.stage], dict(inputs or {})
    key = stage.key(mod, node.params, {k: r.key for k, r in sorted(refs.items())})
    ref = store.ref(mod.NAME, key)
    if store.is_committed(ref):
        return ref
    return stage.execute(mod, node.params, refs, store, key, node.name, run)


def put(store: ArtifactStore, stage_name: str, tables: dict, key: str, folders: dict[str, str] | None = None,
        **manifest) -> ArtifactRef:
    """Commit an artifact of `stage_name` holding `tables` ({Table: rows}, checked against their
    schemas) and `folders` ({name in the artifact: local folder}) under `key`: an input made by
    hand for a stage under test (a report's evaluations, a model that was not trained here)."""
    writer = store.writer(store.ref(stage_name, key), {}, {}, 0)
    for table, rows in tables.items():
        writer.write(table, rows)
    for name, local in (folders or {}).items():
        writer.upload_dir(local, name)
    return writer.commit(node=stage_name, run="harness", **manifest)
