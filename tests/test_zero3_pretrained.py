"""ZeRO-3 for pretrained models, on two real Ray Train workers and a DeepSpeed engine: each rank
holds half the weights from the moment they are read (not after a whole copy was loaded), the
partitioned export reloads with the engine's own outputs, and LoRA trains under ZeRO-3 and
exports a merged, plain folder. The same check on SmolLM2-135M: benchmarks/zero3_memory.py,
figures in benchmarks/RESULTS.md."""
import json
from pathlib import Path

import pytest
import torch

from benchmarks import zero3_memory


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory):
    from pipeline.train.models import scratch_model, train_tokenizer
    folder = tmp_path_factory.mktemp("pretrained")
    tokenizer = train_tokenizer([f"Human: question {i} about the weather? Assistant: an answer {i}." for i in range(300)], 400)
    scratch_model("mini", tokenizer, seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_zero3_loads_partitioned_and_exports_what_it_trained(pretrained_folder, ray_two_cpus):
    from transformers import AutoModelForCausalLM
    out = zero3_memory.run(str(pretrained_folder), workers=2, steps=3)
    full = out["model_parameter_bytes"]
    assert full == out["loaded_parameter_bytes"] > 0
    # each rank holds its half right after from_pretrained, and keeps holding only that in the engine
    for after_load, rank in zip(out["held_after_load"], out["ranks"]):
        assert 0.45 * full <= after_load <= 0.55 * full
        assert 0.45 * full <= rank["parameter_bytes"] <= 0.55 * full
    assert out["losses"][-1] < out["losses"][0]                 # it trained
    assert out["max_logit_difference"] < 1e-5                   # the export is what the engine computes
    base = AutoModelForCausalLM.from_pretrained(pretrained_folder).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(out["folder"]).state_dict()
    assert set(tuned) == set(base) and all(tuned[k].dtype == torch.float32 for k in tuned)
    assert all(not torch.equal(base[k], tuned[k]) for k in base if k.endswith("q_proj.weight"))


@pytest.mark.slow  # ~25 s more: the full-weight case above covers loading and export
def test_lora_under_zero3_trains_adapters_and_exports_them_merged(pretrained_folder, ray_two_cpus):
    from transformers import AutoModelForCausalLM
    out = zero3_memory.run(str(pretrained_folder), lora=True, workers=2, steps=3)
    # mini: 4 layers x (q, v) x (A: 4 x 192 + B: 192 x 4)
    assert out["trainable_parameters"] == 4 * 2 * (4 * 192 + 192 * 4)
    assert out["max_logit_difference"] < 1e-4
    folder = out["folder"]
    assert not (Path(folder) / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(pretrained_folder).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert set(tuned) == set(base)
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(4) for p in ("q", "v")}


def test_a_partitioned_export_writes_shards_with_an_index(pretrained_folder, tmp_path, monkeypatch):
    """Shards fill to SHARD_BYTES and an index maps every weight to its file (what from_pretrained
    reads for a large model); one process, ZeRO-3 off, the same walk over modules."""
    from transformers import AutoModelForCausalLM

    from pipeline.train import strategy
    model = AutoModelForCausalLM.from_pretrained(pretrained_folder)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    strategy.export_partitioned(model, str(tmp_path), rank=0, shard_bytes=1_000_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 2 and all((tmp_path / f).exists() for f in files)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).state_dict()
    original = model.state_dict()
    assert set(reloaded) == set(original) and all(torch.equal(reloaded[k], original[k]) for k in original)
