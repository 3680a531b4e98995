"""Training worker groups (pipeline/train/service.py) on a real local Ray cluster: jobs share one
TorchTrainer worker group, a job that raises fails only its own stage, once (Ray Train restarts
the group's workers for the next job), and an idle group leaves so its CPUs go back to the cluster."""
import os
import time
from dataclasses import dataclass

import pytest
import ray

from pipeline.config import TrainConfig
from pipeline import room
from pipeline.train import service, worker
from pipeline.train.specs import TrainResult


@dataclass(frozen=True)
class Spec:
    node: str
    output_uri: str
    train: TrainConfig
    fail: bool = False


def loop(spec: Spec, job=None) -> TrainResult:
    """Every rank: a collective (the process group is up), then rank 0's answer."""
    import ray.train
    import torch
    import torch.distributed as dist
    ctx = ray.train.get_context()
    t = torch.ones(1)
    dist.all_reduce(t)
    if spec.fail:
        raise ValueError(f"job {spec.node} failed on purpose")
    return TrainResult(log=[{"pid": os.getpid()}], parameters=int(t.item()), world_size=ctx.get_world_size(),
                       nodes=1, phases={"train": 0.0})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import sys
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the named dispatcher every launch finds; a short idle time so the test sees a group leave
    handle = service.Dispatcher.options(name=room.TRAINER, namespace=room.NAMESPACE).remote(idle_s=3.0)
    root = tmp_path_factory.mktemp("store")
    try:
        yield handle, f"{root}/stage/key"
    finally:
        ray.shutdown()


def spec(uri, name, **kw):
    return Spec(node=name, output_uri=uri, train=TrainConfig(num_workers=2), **kw)


def test_jobs_share_a_worker_group_and_a_failure_stays_with_its_job(cluster):
    d, uri = cluster
    first = worker.launch(loop, spec(uri, "a"))
    second = worker.launch(loop, spec(uri, "b"))
    assert first.parameters == 2 and first.world_size == 2  # all-reduced over both ranks
    assert first.log[0]["pid"] == second.log[0]["pid"]  # the same worker process ran both jobs
    assert "queued" in first.phases and "queued" in second.phases
    assert ray.get(d.stats.remote())["groups_started"] == 1

    with pytest.raises(Exception, match="failed on purpose"):
        worker.launch(loop, spec(uri, "c", fail=True))
    third = worker.launch(loop, spec(uri, "d"))  # the group's workers restarted after the failed job
    assert third.parameters == 2 and third.log[0]["pid"] != first.log[0]["pid"]
    assert third.restarts == 0  # the failed job was not run again, and d never lost a worker
    assert ray.get(d.stats.remote())["groups_started"] == 1


def test_an_idle_group_leaves_and_gives_its_cpus_back(cluster):
    d, uri = cluster
    worker.launch(loop, spec(uri, "e"))
    deadline = time.time() + 60
    while time.time() < deadline and (ray.get(d.stats.remote())["live"] or ray.available_resources().get("CPU", 0) < 2):
        time.sleep(0.5)
    assert ray.get(d.stats.remote())["live"] == 0 and ray.available_resources().get("CPU", 0) == 2
