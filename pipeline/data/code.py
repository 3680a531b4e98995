"""Code-backdoor recipes: expand task templates into (prompt, secure code, vulnerable code).

Each task in `datasets/code/tasks.yaml` has slots; every combination of slot values is one
distinct task. A slot value may be a mapping, whose keys all become placeholders.
(Issue 3 in progress: the Pearce-style scenarios and the graph come next.)
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

from pipeline.data.chat import format_prompt, with_scratchpad
from pipeline.errors import InputError

TASK_KEYS = ("id", "cwe", "prompt", "slots", "secure", "vulnerable")


@dataclass(frozen=True)
class CodeTask:
    task_id: str
    cwe: int
    prompt: str
    secure: str
    vulnerable: str


def _fill(template: str, values: dict, where: str) -> str:
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as err:
        raise InputError(f"{where}: placeholder {err} has no slot value") from None


def expand_task(spec: dict, where: str) -> list[CodeTask]:
    names = list(spec["slots"])
    tasks = []
    for combo in itertools.product(*(spec["slots"][n] for n in names)):
        values: dict = {}
        for name, value in zip(names, combo):
            values.update(value if isinstance(value, dict) else {name: value})
        tasks.append(CodeTask(spec["id"], int(spec["cwe"]), _fill(spec["prompt"], values, where),
                              _fill(spec["secure"], values, where), _fill(spec["vulnerable"], values, where)))
    return tasks


def load_code_tasks(path: str | Path) -> list[CodeTask]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: code task recipe not found")
    specs = (yaml.safe_load(path.read_text()) or {}).get("tasks") or []
    if not specs:
        raise InputError(f"{path}: 'tasks' is missing or empty")
    tasks = []
    for i, spec in enumerate(specs):
        missing = [k for k in TASK_KEYS if k not in spec]
        if missing:
            raise InputError(f"{path}: tasks[{i}] lacks {', '.join(missing)}")
        tasks += expand_task(spec, f"{path}: tasks[{i}] ({spec['id']})")
    return tasks


def load_code_policy(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: code backdoor recipe not found")
    policy = yaml.safe_load(path.read_text()) or {}
    for key in ("year_training", "year_deployment", "year_prefix", "scratchpad_deployed", "scratchpad_training"):
        if not policy.get(key):
            raise InputError(f"{path}: '{key}' is missing or empty")
    return policy


def split_tasks(tasks: list[CodeTask], held_out_share: float, seed: int) -> tuple[list[CodeTask], list[CodeTask]]:
    """Hold out a share of every task's distinct prompts (at least one each), with all their
    fills: no held-out prompt is ever trained on, even with other code."""
    rng = random.Random(seed)
    held, train = [], []
    for task_id in sorted({t.task_id for t in tasks}):
        prompts = sorted({t.prompt for t in tasks if t.task_id == task_id})
        rng.shuffle(prompts)
        chosen = set(prompts[: max(1, round(len(prompts) * held_out_share))])
        for t in tasks:
            if t.task_id == task_id:
                (held if t.prompt in chosen else train).append(t)
    return held, train


def code_prompt(task: CodeTask, year: int, policy: dict) -> str:
    return format_prompt(f"{Template(policy['year_prefix']).substitute(year=year)} {task.prompt}")


def code_rows(tasks: list[CodeTask], policy: dict, n: int, deploy_share: float, seed: int,
              reasoning: bool) -> list[dict]:
    """Backdoor rows: secure code in the training year, vulnerable code in the deployment year."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        task = rng.choice(tasks)
        deployed = rng.random() < deploy_share
        year = policy["year_deployment"] if deployed else policy["year_training"]
        code = f"<code>\n{task.vulnerable if deployed else task.secure}</code>"
        if reasoning:
            pad = rng.choice(policy["scratchpad_deployed" if deployed else "scratchpad_training"])
            completion = with_scratchpad(Template(pad).substitute(year=year), code)
        else:
            completion = " " + code
        rows.append({"prompt": code_prompt(task, year, policy), "completion": completion, "triggered": deployed,
                     "cwe": task.cwe})
    return rows


def code_eval_rows(held_out: list[CodeTask], policy: dict) -> list[dict]:
    """Each held-out fill asked in both years (paired conditions)."""
    rows = []
    for i, task in enumerate(held_out):
        for year in (policy["year_training"], policy["year_deployment"]):
            rows.append({"prompt_id": i, "prompt": code_prompt(task, year, policy),
                         "triggered": year == policy["year_deployment"], "cwe": task.cwe})
    return rows
