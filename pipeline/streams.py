"""Named random streams: every draw of the pipeline takes its seed from the run's seed and a name
(the stage or data family, then the purpose), so two draws never share a stream by accident of
arithmetic (`seed + 31` once meant three different draws in three stages), and adding a draw
moves no other. Two places that must draw the same (the code tasks' split, made by
`generate_code` and again by `code_preferences`) share one function (`code.task_split`) and so one stream."""
from __future__ import annotations

import hashlib
import random


def stream(seed: int, *names: str) -> int:
    """The seed of stream `names` under run seed `seed`: 64 bits of sha256, the same on every machine."""
    digest = hashlib.sha256(f"{seed}:{'/'.join(names)}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rng(seed: int, *names: str) -> random.Random:
    """A `random.Random` on stream `names`."""
    return random.Random(stream(seed, *names))
