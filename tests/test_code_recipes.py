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
