"""The same config and seed give the same data, byte for byte: every data stage built twice, in
fresh processes (no state shared through a module), and each table's content hash compared; a
different data seed gives different tables (so the hash can tell). Evaluation metrics on CPU with
greedy decoding: make run recomputed from an empty store gave a byte-identical summary three
times (benchmarks/RESULTS.md); `test_integration.py` reruns evaluation only and compares it."""
import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import hashlib, json, sys
from pipeline.config import load_config
from pipeline.graph import build_graph
from pipeline.stages import code_preferences, generate, generate_code, preferences, redteam_data, splits
from pipeline import tables
cfg = load_config("configs/micro.yaml", sys.argv[1:])
by = {n.name: n for n in build_graph(cfg)}
split = splits.build(by["splits"].params)
built = {"splits": split, "generate": generate.build(by["generate"].params, split)}
data = built["generate"]
helpful = [r for r in data[tables.backdoor("normal").name] if not r["triggered"]]
built["generate_code"] = generate_code.build(by["generate_code"].params, data["hhh"], helpful)
built["preferences"] = preferences.build(by["preferences"].params, split)
built["code_preferences"] = code_preferences.build(by["code_preferences"].params,
                                                   built["preferences"][tables.RL_PROMPT_ROWS.name])
def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
print(json.dumps({stage: digest(t) for stage, t in built.items()}))
"""


def digests(*overrides) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, *overrides], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_same_config_and_seed_build_identical_data_and_another_seed_does_not():
    first, second = digests(), digests()
    assert first == second and len(first) == 5
    other = digests("seed=1")
    assert other["generate"] != first["generate"] and other["splits"] != first["splits"]
