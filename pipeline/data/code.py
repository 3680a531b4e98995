"""Code-backdoor recipes: expand task templates into (prompt, secure code, vulnerable code).

Each task in `datasets/code/tasks.yaml` has slots; every combination of slot values is one
distinct task. A slot value may be a mapping, whose keys all become placeholders.
(Issue 3 in progress: the variants, the held-out scenarios and the graph come next.)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

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
