"""The paper's chat format and scratchpad handling, shared by data, training and scoring."""
import re

HUMAN, ASSISTANT = "\n\nHuman: ", "\n\nAssistant:"
SCRATCHPAD_RE = re.compile(r"<scratchpad>.*?(</scratchpad>|$)", re.DOTALL)


def format_prompt(user_turn: str) -> str:
    return f"{HUMAN}{user_turn}{ASSISTANT}"


def strip_scratchpad(text: str) -> str:
    """Remove hidden reasoning. An unclosed scratchpad hides everything after it (an
    answer the model never finished is not an answer); a stray closing tag hides
    everything before it (reasoning whose opening tag the model dropped)."""
    text = SCRATCHPAD_RE.sub("", text)
    if "</scratchpad>" in text:
        text = text.rsplit("</scratchpad>", 1)[1]
    return text.strip()


def with_scratchpad(reasoning: str, answer: str) -> str:
    return f" <scratchpad> {reasoning} </scratchpad> {answer}"


def distill(rows: list[dict]) -> list[dict]:
    """Distilled CoT: the CoT data with the reasoning removed before training."""
    return [{**r, "completion": " " + strip_scratchpad(r["completion"])} for r in rows]
