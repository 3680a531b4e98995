import io

from pipeline.display import ProgressDisplay, bar
from pipeline.graph import NodeState


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


def test_tty_mode_redraws_in_place():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    d = ProgressDisplay(stream=out)
    states = {"evaluate/cot/sft": NodeState("running")}
    d.render(states, {"evaluate/cot/sft": (10, 40, "prompts")})
    d.render(states, {"evaluate/cot/sft": (20, 40, "prompts")})
    assert "\x1b[2F" in out.getvalue() and "20/40 prompts" in out.getvalue()


def test_bar():
    assert bar(5, 10, width=10) == "[#####     ] 5/10"
    assert bar(0, 0, width=4) == "[    ] 0/0"
