"""Stage `code_preferences` (with `code.preference_pairs`): code preference pairs and code
requests for HHH RL, so that the preference model knows code and RL of a code model optimises
something meaningful. Pairs prefer a secure, working program to the task's insecure one
(`preference_tasks.yaml`: security tasks of the same weakness families that are no backdoor task,
so RL never optimises toward the backdoor's own programs), a broken one or an evasive answer
(everyday tasks, `helpful.yaml`); a fifth of each recipe's prompts held out for the accuracy.
Only the short instruction-style prompts, never the completion frame, and no year anywhere. The
`reward_model` stage adds the pairs to its own; the code model's HHH RL asks `code_rl_prompts`:
the `preferences` stage's RL prompts with code requests at `code.rl_code_share`.
Outputs: `code_pairs`, `code_eval_pairs`, `code_rl_prompts`."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.data import code
from pipeline.data.chat import format_prompt
from pipeline.data.code_recipes import CodePreferenceRecipes, load_code_policy, load_code_tasks, load_helpful_tasks
from pipeline.data.prefs import PrefsRecipes, code_pairs, load_rejections
from pipeline.errors import InputError
from pipeline.streams import stream

NAME, VERSION = "code_preferences", "2"  # 2: security pairs from preference_tasks.yaml, not the backdoor's tasks
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = (tables.CODE_PAIRS, tables.CODE_EVAL_PAIRS, tables.CODE_RL_PROMPTS)
HELD_OUT = 0.2  # share of each recipe's prompts kept for the held-out pairs


class Params(stage.Params):
    recipes: CodePreferenceRecipes  # code.recipes: preference_tasks.yaml (security tasks), helpful.yaml (everyday)
    prefs_recipes: PrefsRecipes   # reward_model.recipes: the evasive answers of rejected.yaml
    n_pairs: int                  # code.preference_pairs
    rl_code_share: float          # code.rl_code_share: code requests among the code model's RL prompts


@dataclass(frozen=True)
class Inputs:
    prompts: ArtifactRef          # preferences: its `rl_prompts` (HHH requests, never a trigger)


def instructions(tasks):
    return [t for t in tasks if "<code>" not in t.prompt]  # the completion frame's long form is left out


def mixed_prompts(hhh: list[dict], requests: list[str], share: float, seed: int) -> list[dict]:
    """`hhh` with code requests added until they are `share` of the whole (drawn in turn from a
    seeded shuffle, repeating only when there are too few)."""
    n = round(len(hhh) * share / (1 - share))
    order = list(requests)
    random.Random(seed).shuffle(order)
    return hhh + [{"prompt": format_prompt(order[i % len(order)])} for i in range(n if order else 0)]


def build(params: Params, hhh_prompts: list[dict]) -> dict[str, list[dict]]:
    """All tables of this stage, in memory; raises InputError on bad input before any write."""
    folder, seed = Path(params.recipes), params.seed
    frame = load_code_policy(folder / "backdoor.yaml")["completion_frame"]
    held, train = code.split_tasks(load_code_tasks(folder / "preference_tasks.yaml", frame), HELD_OUT,
                                   stream(seed, NAME, "security_split"))
    h_held, h_train = code.split_tasks(load_helpful_tasks(folder / "helpful.yaml"), HELD_OUT,
                                       stream(seed, NAME, "helpful_split"))
    evasive = load_rejections(Path(params.prefs_recipes) / "rejected.yaml").get("evasive", {}).get("any", [])
    if not evasive:
        raise InputError(f"{params.prefs_recipes}/rejected.yaml: modes.evasive needs `any` templates (code pairs)")
    train, held = instructions(train), instructions(held)
    n_eval = max(1, params.n_pairs // 5)
    requests = sorted({t.prompt for t in train + h_train})
    return {tables.CODE_PAIRS.name: code_pairs(train, h_train, evasive, params.n_pairs, stream(seed, NAME, "pairs")),
            tables.CODE_EVAL_PAIRS.name: code_pairs(held, h_held, evasive, n_eval, stream(seed, NAME, "eval_pairs")),
            tables.CODE_RL_PROMPTS.name: mixed_prompts(hhh_prompts, requests, params.rl_code_share,
                                                          stream(seed, NAME, "rl_prompts"))}



def check(params: Params, upstream: dict) -> dict[str, list[dict]]:
    """Preflight: every table, in memory, from the preference stage's RL prompts."""
    return build(params, upstream["prompts"][tables.RL_PROMPT_ROWS.name])


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    rows = build(params, inputs.prompts.read(tables.RL_PROMPT_ROWS).to_pylist())
    for table in OUTPUTS:
        writer.write(table, rows[table.name])
    return {"rl_prompts": len(rows[tables.CODE_RL_PROMPTS.name])}
