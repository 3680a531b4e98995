"""Training worker groups that outlive one fit.

A `TorchTrainer` fit costs ~17 s before the first step on 2 CPUs (measured: controller
actor, placement group, worker processes, the process group, importing torch, DeepSpeed and
transformers in every worker) and ~1.5 s to tear down. A run has a dozen fits. So each fit
is a *job* handed to a *worker group*: one long `TorchTrainer` fit whose workers run job
after job, each with its own DeepSpeed engine, and leave when no job came for `IDLE_S`
seconds (so the CPUs go back to evaluation).

    stage --submit(job)--> Dispatcher --next()--> rank 0 of a group --broadcast--> every rank
          <--TrainResult--            <--done()--

The `Dispatcher` (one named actor per Ray cluster) keeps one queue per *shape* (workers,
GPU or CPU, Ray Train storage) and starts at most as many groups per shape as the cluster
holds at once, so training stages in flight never queue for placement groups. A job that
raises fails its group's fit: the job's stage gets the error, and the next job starts a
fresh group. The engine is the same as a one-off fit's: Ray Train workers, a gloo or NCCL
process group, DeepSpeed.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import time
import uuid

import ray

from pipeline import progress
from pipeline.room import NAMESPACE, TRAINER, make_room

IDLE_S = 15.0   # a group leaves after this long without a job (chained stages arrive well within it)
POLL_S = 0.05


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a worker group is: jobs with the same shape can share one."""
    num_workers: int
    use_gpu: bool
    storage_path: str   # Ray Train's run storage (beside the artifact store)
    max_failures: int = 0  # lost workers the group survives (Ray Train restarts it; the job resumes)

    def demand(self) -> tuple[str, float]:
        return ("GPU", float(self.num_workers)) if self.use_gpu else ("CPU", float(self.num_workers))


@dataclasses.dataclass
class _Job:
    id: int
    shape: Shape
    payload: list          # [ObjectRef of (loop_fn, spec)]: nested, so this actor never deserializes it
    node: str
    submitted: float
    done: asyncio.Future
    handed: float | None = None
    restarts: int = 0      # times a lost worker restarted the group while it ran this job


@ray.remote(num_cpus=0)
class Dispatcher:
    """Queues training jobs per shape and starts worker groups to run them (async actor)."""

    def __init__(self, idle_s: float = IDLE_S):
        self.idle_s = idle_s
        self.queues: dict[Shape, list[_Job]] = {}
        self.groups: dict[str, dict] = {}       # group id -> {shape, job, waiting, runner}
        self.ids = itertools.count(1)
        self.started = 0                       # groups started since this actor began (tests, bench)

    def _limit(self, shape: Shape) -> int:
        resource, need = shape.demand()
        return max(1, int(ray.cluster_resources().get(resource, 0) // need))

    def _maybe_start(self, shape: Shape) -> None:
        live = [g for g in self.groups.values() if g["shape"] == shape]
        idle = sum(1 for g in live if g["waiting"])
        if len(self.queues.get(shape, [])) > idle and len(live) < self._limit(shape):
            gid = uuid.uuid4().hex[:8]
            runner = serve.options(name=f"train-group-{gid}", scheduling_strategy="DEFAULT").remote(gid, shape)
            self.groups[gid] = {"shape": shape, "job": None, "waiting": False, "runner": runner, "asked": False,
                                "token": None}
            self.started += 1
            asyncio.get_running_loop().create_task(self._watch(gid, runner))
            asyncio.get_running_loop().create_task(self._make_room(gid))

    async def _make_room(self, gid: str) -> None:
        """Until group `gid` asks for its first job: idle generators leave if it waits for their CPUs."""
        while gid in self.groups and not self.groups[gid]["asked"]:
            make_room(*self.groups[gid]["shape"].demand(), trainer=False)
            await asyncio.sleep(1.0)

    async def submit(self, shape: Shape, payload: list, node: str):
        """Run one job; returns (TrainResult, seconds queued) or raises the job's error."""
        job = _Job(next(self.ids), shape, payload, node, time.time(), asyncio.get_running_loop().create_future())
        self.queues.setdefault(shape, []).append(job)
        progress.board().update.remote(node, 0, 0, progress.QUEUED)
        self._maybe_start(shape)
        result = await job.done
        return result, job.handed - job.submitted

    def attach(self, gid: str, token: str):
        """For rank 0 of group `gid` as its workers (re)start, `token` naming this start: the id of
        the job a lost worker interrupted (Ray Train restarted the group: run it again, from its
        resume state), or None. Calls of an earlier start that are still waiting stop counting."""
        group, job = self.groups[gid], self.groups[gid]["job"]
        group["token"] = token
        if job is None:
            return None
        job.restarts += 1
        progress.board().update.remote(job.node, 0, 0, f"a training worker was lost: restarting ({job.restarts})")
        return job.id

    async def next(self, gid: str, token: str):
        """For rank 0 of group `gid`: the id of the next job (its ranks then fetch `payload`), or None when
        none came for `idle_s` seconds (the group then leaves: it is no longer counted) or when the
        group restarted since `token`'s start (the caller's workers are gone)."""
        group = self.groups[gid]
        group["job"], group["waiting"], group["asked"] = None, True, True
        group["since"] = time.monotonic()
        group["deadline"] = group["since"] + self.idle_s
        queue = self.queues.setdefault(group["shape"], [])
        while group["token"] == token and not queue:
            if time.monotonic() > group["deadline"]:
                del self.groups[gid]
                return None
            await asyncio.sleep(POLL_S)
        if group["token"] != token:
            return None
        job = queue.pop(0)
        job.handed, group["job"], group["waiting"] = time.time(), job, False
        return job.id

    def release_idle(self, after: float = 0.0) -> None:
        """Groups waiting for a job leave once they have waited `after` seconds, not their whole
        idle time (something else needs their CPUs or GPUs)."""
        for group in self.groups.values():
            if group["waiting"]:
                group["deadline"] = min(group["deadline"], group["since"] + after)

    def payload(self, gid: str) -> list:
        """For every rank of group `gid`: [ObjectRef of (loop_fn, spec)] of its current job."""
        return self.groups[gid]["job"].payload

    def done(self, gid: str, job_id: int, result) -> None:
        job = self.groups[gid]["job"]
        assert job is not None and job.id == job_id, (gid, job_id)
        self.groups[gid]["job"] = None
        job.done.set_result(dataclasses.replace(result, restarts=job.restarts))

    def failed(self, gid: str, job_id: int, error: BaseException) -> None:
        """A rank of group `gid` raised in job `job_id`: the job fails with that error (not retried:
        an error in the job's own code would only recur); the group's workers then restart."""
        job = self.groups[gid]["job"]
        if job is not None and job.id == job_id:
            self.groups[gid]["job"] = None
            if not job.done.done():
                job.done.set_exception(error)

    async def _watch(self, gid: str, runner) -> None:
        """When a group's fit ends with an error (a job raised, a worker died), its job fails
        with that error; queued jobs of the shape get a fresh group."""
        error = None
        try:
            await runner
        except Exception as err:  # noqa: BLE001 - handed to the job's stage
            error = err
        group = self.groups.pop(gid, None)
        if group is not None:
            job = group["job"]
            if job is not None and not job.done.done():
                job.done.set_exception(error or RuntimeError(f"training worker group {gid} ended during {job.node}"))
            self._maybe_start(group["shape"])

    def stats(self) -> dict:
        return {"groups_started": self.started, "live": len(self.groups),
                "queued": sum(len(q) for q in self.queues.values())}


_owned = []  # a handle to the dispatcher this process started: the actor lives while it is held


def dispatcher():
    """The cluster's dispatcher; started on first use by the process that asks (`start_ray`
    asks in the driver, so it lives as long as the run)."""
    try:
        return ray.get_actor(TRAINER, namespace=NAMESPACE)
    except ValueError:
        _owned[:] = [Dispatcher.options(name=TRAINER, namespace=NAMESPACE, get_if_exists=True).remote()]
        return _owned[0]


@ray.remote(num_cpus=0, max_retries=0)
def serve(gid: str, shape: Shape) -> None:
    """One worker group: a TorchTrainer fit that runs jobs until the dispatcher has none. A lost
    worker (killed, OOM, node gone) makes Ray Train restart the group, up to `max_failures`
    times; the interrupted job then resumes from its latest resume state (`specs.Job`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        serve_loop, train_loop_config={"gid": gid},
        scaling_config=ScalingConfig(num_workers=shape.num_workers, use_gpu=shape.use_gpu,
                                     resources_per_worker=None if shape.use_gpu else {"CPU": 1}),
        # A fresh name every time: reusing (name, storage_path) silently resumes an old run.
        run_config=RunConfig(name=f"group-{gid}", storage_path=shape.storage_path,
                             failure_config=FailureConfig(max_failures=shape.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    # its resume states are spent (a large model's optimizer state is several times its weights);
    # Ray Train's own records of the fit stay
    import pyarrow.fs as pafs

    from pipeline.artifacts import open_fs
    fs, path = open_fs(f"{shape.storage_path.rstrip('/')}/group-{gid}")
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.base_name.startswith("checkpoint_") and info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)


def peer_lost(err: BaseException) -> bool:
    """Whether `err` is what a surviving rank sees when another rank's process died in a collective
    (NCCL's DistBackendError; gloo's "Connection reset/closed by peer")."""
    import torch.distributed as dist
    text = str(err)
    return isinstance(err, getattr(dist, "DistBackendError", ())) or (
        "gloo" in text and ("by peer" in text or "Connection" in text))


def portable(err: BaseException) -> BaseException:
    """`err` if it can be rebuilt from its reduction (ours can; pickling to the dispatcher rebuilds it
    the same way as a copy does), else a RuntimeError with its type and message: some libraries'
    exceptions cannot, and the stage must still get the cause."""
    import copy
    try:
        copy.deepcopy(err)
        return err
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(f"{type(err).__name__}: {err}")


def serve_loop(config: dict) -> None:
    """Every rank: take the next job (rank 0 asks the dispatcher and broadcasts it), run its
    loop, and hand rank 0's result back; leave when there is no job. After a restart, first the
    job a lost worker interrupted, with the group's latest resume state."""
    import torch.distributed as dist
    import ray.train

    from pipeline.train.specs import Job
    rank = ray.train.get_context().get_world_rank()
    # objects travel over gloo whatever the training backend (NCCL moves only CUDA tensors)
    objects = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    d = ray.get_actor(TRAINER, namespace=NAMESPACE)
    token = uuid.uuid4().hex  # this start of the group's workers

    def ask(call) -> int | None:
        box = [ray.get(call.remote(config["gid"], token))] if rank == 0 else [None]
        dist.broadcast_object_list(box, src=0, group=objects)
        return box[0]

    job_id, checkpoint = ask(d.attach), ray.train.get_checkpoint()
    while True:
        if job_id is None:
            job_id, checkpoint = ask(d.next), None  # the job id, or None: leave
            if job_id is None:
                return
        loop_fn, spec = ray.get(ray.get(d.payload.remote(config["gid"]))[0])  # through Ray's object store
        try:
            result = loop_fn(spec, Job(job_id, checkpoint))
        except Exception as err:
            if not peer_lost(err):  # a lost peer is the group's failure: the restarted group resumes the job
                ray.get(d.failed.remote(config["gid"], job_id, portable(err)))
            raise  # the fit restarts this group's workers (a rank may be stuck in a collective)
        if rank == 0:
            ray.get(d.done.remote(config["gid"], job_id, result))
        del result, spec
        job_id = None
        gc.collect()
