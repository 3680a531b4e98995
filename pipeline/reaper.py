"""When a driver that started its own Ray cluster dies, end what it left.

`python -m pipeline.reaper DRIVER ROOT...` runs beside a driver: `runtime.start_ray` starts it,
in its own session so that the terminal's Ctrl-C does not reach it, with the pids of the
cluster's roots (the GCS and the raylet, the driver's children). Every `POLL_S` it notes the
roots and their descendants (pid and start time). Once the driver is gone, however it went
(SIGKILL, OOM kill, a closed terminal), it ends the noted processes that still run: the GCS and
raylet go with the driver by themselves, but the dashboard and runtime-env agents, orphaned,
lingered ~90 s here (Ray 2.60). It ends only processes it saw in that cluster, each checked by
its start time, so a reused pid is never touched. When the roots end first (the driver shut Ray
down), it has nothing to do and exits.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

POLL_S, GRACE_S = 1.0, 3.0


ROOTS = ("gcs_server", "raylet")


def spawn(driver_pid: int) -> subprocess.Popen | None:
    """Start a reaper for the cluster this driver has just started (None: no roots found)."""
    roots = []
    for child in psutil.Process(driver_pid).children():
        try:
            if child.name() in ROOTS:
                roots.append(child.pid)
        except psutil.Error:  # a child that has just ended
            continue
    if not roots:
        return None
    return subprocess.Popen([sys.executable, "-m", "pipeline.reaper", str(driver_pid), *map(str, roots)],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch(driver_pid: int, root_pids: list[int]) -> list[int]:
    """Wait for the driver to go; end the cluster's leftovers; the pids ended."""
    try:
        driver, roots = psutil.Process(driver_pid), [psutil.Process(p) for p in root_pids]
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, float] = {}
    while running(driver):
        if not any(running(r) for r in roots):
            return []  # Ray was shut down with the driver still running
        for root in roots:
            try:
                for p in [root, *root.children(recursive=True)]:
                    seen.setdefault(p.pid, p.create_time())
            except psutil.Error:
                pass
        time.sleep(POLL_S)
    left = []
    for pid, started in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == started and pid != os.getpid():
                left.append(p)
        except psutil.NoSuchProcess:
            continue
    for p in left:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, stubborn = psutil.wait_procs(left, timeout=GRACE_S)
    for p in stubborn:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in left]


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(p) for p in sys.argv[2:]])
