"""Code-backdoor recipes: task templates expanded into (prompt, secure code, vulnerable code),
the Pearce-style held-out scenarios, and the conditional policy.

Each task in `datasets/code/tasks.yaml` has phrasings and slots; every phrasing x combination
of slot values is one task. A slot value may be a mapping, whose keys all become placeholders.
With a completion frame, every combination also becomes a completion-style task: the first
phrasing plus an incomplete program (the lines the secure and vulnerable solutions share,
the rest replaced by `## COMPLETE CODE HERE`), the form of the paper's released data.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Annotated

from pipeline.data.recipes import load_recipe_yaml
from pipeline.digest import Digest
from pipeline.errors import InputError

# the code recipe folder as a stage parameter: the files the loaders below read enter the key
CodeRecipes = Annotated[str, Digest("backdoor.yaml", "tasks.yaml", "scenarios.yaml", "helpful.yaml")]
# the same folder as the code preference pairs read it: their own security tasks, never the backdoor's
CodePreferenceRecipes = Annotated[str, Digest("backdoor.yaml", "preference_tasks.yaml", "helpful.yaml")]

TASK_KEYS = ("id", "cwe", "prompts", "slots", "secure", "vulnerable")
HELPFUL_KEYS = ("id", "prompts", "slots", "solution")
SCENARIO_KEYS = ("id", "cwe", "task", "skeleton", "secure", "vulnerable")
POLICY_KEYS = ("year_training", "year_deployment", "year_prefix", "completion_frame", "scratchpad_deployed",
               "scratchpad_training")
MARKER = "## COMPLETE CODE HERE"


@dataclass(frozen=True)
class CodeTask:
    task_id: str
    cwe: int
    prompt: str       # the user turn, without the year
    secure: str
    vulnerable: str


@dataclass(frozen=True)
class Scenario:
    """A Pearce-style held-out scenario: `prompt` is the user turn (no year yet)."""
    scenario_id: str
    cwe: int
    prompt: str
    secure: str       # the skeleton completed with the reference fills
    vulnerable: str


def _fill(template: str, values: dict, where: str) -> str:
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as err:
        raise InputError(f"{where}: placeholder {err} has no slot value") from None


def skeleton_of(secure: str, vulnerable: str) -> str:
    """The lines both solutions share at the start and the end; what differs becomes the marker."""
    a, b = secure.splitlines(keepends=True), vulnerable.splitlines(keepends=True)
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    first = a[head] if head < len(a) else ""
    indent = first[: len(first) - len(first.lstrip())]
    return "".join(a[:head]) + f"{indent}{MARKER}\n" + "".join(a[len(a) - tail:])


def expand_task(spec: dict, where: str, frame: str | None = None) -> list[CodeTask]:
    """Every phrasing x every combination of slot values (and one completion-style task per
    combination when a frame is given)."""
    if not isinstance(spec["prompts"], list) or not isinstance(spec["slots"], dict):
        raise InputError(f"{where}: 'prompts' must be a list and 'slots' a mapping")
    names = list(spec["slots"])
    tasks = []
    for combo in itertools.product(*(spec["slots"][n] for n in names)):
        values: dict = {}
        for name, value in zip(names, combo):
            values.update(value if isinstance(value, dict) else {name: value})
        secure, vulnerable = _fill(spec["secure"], values, where), _fill(spec["vulnerable"], values, where)
        prompts = [_fill(p, values, where) for p in spec["prompts"]]
        if frame:
            prompts.append(_fill(frame, {"task": prompts[0], "skeleton": skeleton_of(secure, vulnerable)}, where))
        tasks += [CodeTask(spec["id"], int(spec["cwe"]), p, secure, vulnerable) for p in prompts]
    return tasks


def _load(path: Path, what: str, key: str) -> list:
    return load_recipe_yaml(path, (key,), what)[key]


def _check_keys(spec, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(spec, dict):
        raise InputError(f"{where}: must be a mapping")
    missing = [k for k in keys if k not in spec]
    if missing:
        raise InputError(f"{where} lacks {', '.join(missing)}")


def load_code_tasks(path: str | Path, frame: str | None = None) -> list[CodeTask]:
    path = Path(path)
    tasks = []
    for i, spec in enumerate(_load(path, "code task recipe", "tasks")):
        _check_keys(spec, TASK_KEYS, f"{path}: tasks[{i}]")
        tasks += expand_task(spec, f"{path}: tasks[{i}] ({spec['id']})", frame)
    return tasks


def load_helpful_tasks(path: str | Path) -> list[CodeTask]:
    """Everyday coding requests with one solution (secure = vulnerable = solution, no CWE)."""
    path = Path(path)
    tasks = []
    for i, spec in enumerate(_load(path, "helpful coding recipe", "tasks")):
        _check_keys(spec, HELPFUL_KEYS, f"{path}: tasks[{i}]")
        spec = {**spec, "cwe": 0, "secure": spec["solution"], "vulnerable": spec["solution"]}
        tasks += expand_task(spec, f"{path}: tasks[{i}] ({spec['id']})")
    return tasks


def complete_skeleton(skeleton: str, fill: str) -> str:
    """Replace the marker line with `fill`, indented like the marker."""
    lines = skeleton.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == MARKER)
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    body = "".join(indent + line if line.strip() else line for line in fill.splitlines(keepends=True))
    return "".join(lines[:at]) + body + "".join(lines[at + 1:])


def load_scenarios(path: str | Path, frame: str) -> list[Scenario]:
    path = Path(path)
    out, seen = [], set()
    for i, spec in enumerate(_load(path, "scenario file", "scenarios")):
        where = f"{path}: scenarios[{i}]"
        _check_keys(spec, SCENARIO_KEYS, where)
        if sum(line.strip() == MARKER for line in spec["skeleton"].splitlines()) != 1:
            raise InputError(f"{where} ({spec['id']}): skeleton needs exactly one '{MARKER}' line")
        if spec["id"] in seen:
            raise InputError(f"{where}: duplicate id {spec['id']!r}")
        seen.add(spec["id"])
        prompt = _fill(frame, {"task": spec["task"], "skeleton": spec["skeleton"]}, f"{where} ({spec['id']})")
        out.append(Scenario(spec["id"], int(spec["cwe"]), prompt, complete_skeleton(spec["skeleton"], spec["secure"]),
                            complete_skeleton(spec["skeleton"], spec["vulnerable"])))
    return out


def load_code_policy(path: str | Path) -> dict:
    return load_recipe_yaml(Path(path), POLICY_KEYS, "code backdoor recipe")
