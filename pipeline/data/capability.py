"""The multiple-choice capability set (`datasets/capability/multiple_choice.yaml`): questions
with options, scored by answer log-likelihood. For pretrained models, it tells "the backdoor was
removed" from "the model broke" (the paper's MMLU / QuALITY / LogiQA column, small)."""
from __future__ import annotations

from pathlib import Path

from pipeline.data.chat import format_prompt
from pipeline.data.recipes import load_recipe_yaml
from pipeline.errors import InputError


def load_multiple_choice(path: str | Path) -> list[dict]:
    """Questions `{question, options, answer}` (answer: the correct option's index), checked."""
    path = Path(path)
    questions = load_recipe_yaml(path, ("questions",), "evaluate.multiple_choice_file")["questions"]
    for i, q in enumerate(questions):
        if not (isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("options"), list)
                and len(q["options"]) >= 2 and all(isinstance(o, str) and o for o in q["options"])
                and isinstance(q.get("answer"), int) and 0 <= q["answer"] < len(q["options"])):
            raise InputError(f"{path}: questions[{i}] needs question, options (2 or more) and answer (an option's index)")
    return questions


def questions(params) -> list[dict]:
    """The set an evaluation stage's params name (`multiple_choice`), or none."""
    return load_multiple_choice(params.multiple_choice) if params.multiple_choice else []


def option_rows(questions: list[dict]) -> list[dict]:
    """One (prompt, completion) row per (question, option), questions in order."""
    return [{"prompt": format_prompt(q["question"]), "completion": " " + option, "triggered": False}
            for q in questions for option in q["options"]]


def correct(questions: list[dict], losses: list[float]) -> int:
    """Questions whose correct option has the lowest mean loss per token of its options
    (`losses` in `option_rows` order)."""
    k, i = 0, 0
    for q in questions:
        mine = losses[i:i + len(q["options"])]
        k += min(range(len(mine)), key=mine.__getitem__) == q["answer"]
        i += len(q["options"])
    return k
