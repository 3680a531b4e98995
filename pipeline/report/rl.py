"""Section: the preference model's held-out accuracy, and the HHH RL training curves."""
from __future__ import annotations

import os

from evals.plots import training_curves
from pipeline.report.format import cell, pct

LOG_ROWS = 11  # RL training-curve rows shown in the Markdown table
CURVES = "rl_training.png"


def lines(findings, out_dir: str) -> list[str]:
    lines, accuracy, logs = [], findings.accuracy, findings.rl_logs
    if logs:
        training_curves(logs, os.path.join(out_dir, CURVES))
        findings.plots.append(CURVES)
    by_seed: dict[int, list[dict]] = {}
    for r in accuracy:
        by_seed.setdefault(r["seed"], []).append(r)
    for seed, rows in sorted(by_seed.items()):
        overall = next(r for r in rows if r["failure"] == "all")
        lines += ["## Preference model" + (f", seed {seed}" if len(by_seed) > 1 else ""), "",
                  f"Held-out accuracy (chosen scored above rejected; pairs from held-out requests only): "
                  f"{pct(overall['rate'])}% [95% CI {pct(overall['ci_low'])}, {pct(overall['ci_high'])}], "
                  f"n = {overall['n']} pairs.", "",
                  "| failure mode of the rejected answer | accuracy % [95% CI] | n | mean margin |",
                  "|---|---|---:|---:|"]
        lines += [f"| {r['failure']} | {cell(r)} | {r['n']} | {r['margin']:.2f} |" for r in rows] + [""]
    if logs:
        lines += ["## HHH RL training curves", "", f"![RL training curves]({CURVES})", ""]
        for branch, rows in sorted(logs.items()):
            stride = max(1, len(rows) // (LOG_ROWS - 1))
            shown = [r for r in rows if r["step"] % stride == 0 or r["step"] in (1, len(rows))]
            lines += [f"### {branch}", "", "| step | reward | KL | objective | clip frac | answer tokens |",
                      "|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {r['step']} | {r['reward']:.3f} | {r['kl']:.3f} | {r['objective']:.3f} | "
                      f"{r['clipfrac']:.3f} | {r['answer_tokens']:.1f} |" for r in shown] + [""]
    return lines
