"""Named random streams: a draw's seed comes from the run seed and its name, the same everywhere."""
import ast
from pathlib import Path

from pipeline.streams import stream

ROOT = Path(__file__).resolve().parent.parent


def test_a_stream_is_fixed_by_seed_and_name_and_differs_from_every_other():
    assert stream(0, "splits", "requests") == 5745818117816665724  # the same on every machine and Python
    names = [("splits", "requests"), ("splits", "safety_requests"), ("redteam_data", "recipe_seeds"),
             ("code_preferences", "helpful_split"), ("generate_backdoor", "asks", "cot")]
    seeds = {stream(s, *n) for s in (0, 1) for n in names}
    assert len(seeds) == 2 * len(names)
    assert stream(0, "a", "bc") != stream(0, "ab", "c")  # names are not run together


def test_no_seed_is_made_by_adding_a_number():
    """`seed + 31` numbered a draw by hand; every draw now names its stream (pipeline/streams.py)."""
    offenders = []
    for path in (ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.Constant) \
                    and isinstance(node.left, (ast.Name, ast.Attribute)) and \
                    (getattr(node.left, "id", None) or getattr(node.left, "attr", "")) == "seed":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
