import pytest

from pipeline.config import load_config, parse_config
from pipeline.errors import InputError


def test_smoke_config_loads(repo_root):
    cfg = load_config(repo_root / "configs/smoke.yaml")
    assert cfg.backdoor.num_workers == 2
    assert set(cfg.variants) == {"normal", "cot", "distilled"}
    assert 0 in cfg.safety_sft.checkpoints and len(cfg.safety_sft.checkpoints) >= 4


def test_dotted_overrides_are_typed(repo_root):
    cfg = load_config(repo_root / "configs/smoke.yaml", ["backdoor.steps=50", "variants=[cot]", "evaluate.temperature=0.7"])
    assert cfg.backdoor.steps == 50 and cfg.variants == ("cot",) and cfg.evaluate.temperature == 0.7


@pytest.mark.parametrize("raw, field", [
    ({"backdoor": {"stpes": 5}}, "backdoor.stpes"),
    ({"bogus": 1}, "bogus"),
    ({"backdoor": {"steps": "many"}}, "backdoor.steps"),
    ({"variants": ["cot", "sneaky"]}, "variants.1"),
    ({"safety_sft": {"steps": 10, "checkpoints": [0, 20]}}, "safety_sft"),
])
def test_bad_fields_are_named(raw, field):
    with pytest.raises(InputError) as err:
        parse_config(raw, "x.yaml")
    assert field in str(err.value) and "\n" not in str(err.value)


def test_override_with_unknown_field_is_rejected(repo_root):
    with pytest.raises(InputError, match="evaluate.temprature: unknown field"):
        load_config(repo_root / "configs/smoke.yaml", ["evaluate.temprature=0.5"])


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_pretrained_needs_a_path():
    with pytest.raises(InputError, match="model.pretrained"):
        parse_config({"model": {"source": "pretrained"}})
