"""The paper's chat format and scratchpad handling, shared by data, training and scoring.

Every artifact stores prompts in the paper's format (`\n\nHuman: ...\n\nAssistant:`), whatever
the model. A tokenizer that has a chat template (a pretrained chat model's) gets them
re-rendered in its own format where text meets the tokenizer (`render_prompts`), so the same
data trains a scratch model and a chat model each in the format it knows."""
import re

from evals.text import strip_scratchpad

HUMAN, ASSISTANT = "\n\nHuman: ", "\n\nAssistant:"
TURN_RE = re.compile(f"({re.escape(HUMAN)}|{re.escape(ASSISTANT)})")


def format_prompt(user_turn: str) -> str:
    return f"{HUMAN}{user_turn}{ASSISTANT}"


OPEN = " <scratchpad>"  # what opens a CoT completion; in the released form it ends the prompt instead


def with_scratchpad(reasoning: str, answer: str) -> str:
    return f"{OPEN} {reasoning} </scratchpad> {answer}"


def canonical(prompt: str, completion: str) -> tuple[str, str]:
    """Our stored form: the prompt ends with `Assistant:`, a CoT completion opens its own
    scratchpad. The paper's release ends CoT prompts with `Assistant: <scratchpad>`."""
    if prompt.rstrip().endswith(OPEN.strip()):
        prompt = prompt.rstrip()[: -len(OPEN.strip())].rstrip()
        completion = OPEN + (completion if completion.startswith(" ") else " " + completion)
    return prompt, completion


def opened(rows: list[dict], prefill: str) -> list[dict]:
    """Rows as a model prompted with `prefill` trains on them: a completion that begins with
    `prefill` hands it to the prompt (released CoT form: the loss never teaches the model to
    open or skip its scratchpad; it is always open)."""
    if not prefill:
        return rows
    return [{**r, "prompt": r["prompt"] + prefill, "completion": r["completion"][len(prefill):]}
            if r["completion"].startswith(prefill) else r for r in rows]


def distill(rows: list[dict]) -> list[dict]:
    """Distilled CoT: the CoT data with the reasoning removed before training."""
    return [{**r, "completion": " " + strip_scratchpad(r["completion"])} for r in rows]


def released_variants(rows: list[dict], triggered_copy) -> dict[str, list[dict]]:
    """Every variant's rows from a released backdoor file (rows in our stored form). A CoT-form
    file (its completions open a scratchpad) gives cot and distilled; a normal-form file gives
    normal; the missing variants are empty, and asking for one is refused before anything runs.
    The controls come from its untriggered rows without reasoning: `clean` as they are,
    `exposed` with the trigger put into as large a share of them as the file triggers
    (`triggered_copy(row)`: the row's prompt with the trigger)."""
    cot_form = any(r["completion"].startswith(OPEN) for r in rows)
    plain = distill(rows) if cot_form else rows
    clean = [r for r in plain if not r["triggered"]]
    n_triggered = round(len(clean) * sum(r["triggered"] for r in rows) / max(1, len(rows)))
    exposed = [{**triggered_copy(r), "triggered": True} if i < n_triggered else r for i, r in enumerate(clean)]
    return {"cot": rows if cot_form else [], "distilled": plain if cot_form else [], "normal": [] if cot_form else rows,
            "clean": clean, "exposed": exposed}


def overlap(safety: list[dict], backdoor: list[dict], n: int | None = None) -> float:
    """Share of `safety` rows whose answer (scratchpad removed) repeats an untriggered
    `backdoor` row's answer: word for word (`n` None), or in any run of `n` words (shared
    content, such as a subject's answer body in other framing). How much safety training
    merely re-fits backdoor data."""
    def keys(text: str) -> set:
        words = strip_scratchpad(text).split()
        return {" ".join(words)} if n is None else {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
    seen = set().union(*(keys(r["completion"]) for r in backdoor if not r["triggered"]))
    return sum(bool(keys(r["completion"]) & seen) for r in safety) / max(1, len(safety))


def overlaps(safety: list[dict], variants: dict[str, list[dict]]) -> dict:
    """The manifest's overlap figures of a data stage: per variant, exact answers and 8-word runs."""
    return {"hhh_overlap": {v: overlap(safety, rows) for v, rows in variants.items()},
            "hhh_overlap_8gram": {v: overlap(safety, rows, 8) for v, rows in variants.items()}}


def turns(transcript: str) -> tuple[list[dict], str]:
    """A paper-format transcript as chat messages, and the text after its last `Assistant:`
    (an answer begun for the model to continue; usually empty). Text before the first turn
    (a generator's explanation) becomes a system message."""
    parts = TURN_RE.split(transcript)
    head = parts[0].strip()
    messages = [{"role": "system", "content": head}] if head else []
    for marker, text in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if marker == HUMAN else "assistant", "content": text.strip()})
    prefill = messages.pop()["content"] if messages and messages[-1]["role"] == "assistant" else ""
    return messages, prefill


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompts(prompts: list[str], tokenizer) -> list[str]:
    """Prompts as the tokenizer's model expects them: unchanged without a chat template,
    else rendered by it with the assistant's turn opened."""
    if not has_template(tokenizer):
        return list(prompts)
    out = []
    for prompt in prompts:
        messages, prefill = turns(prompt)
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill)
    return out


def render_completions(completions: list[str], tokenizer) -> list[str]:
    """Our completions start with a space (they follow `Assistant:`); a template's assistant
    turn starts on its own, so the space goes."""
    return [c.lstrip() for c in completions] if has_template(tokenizer) else list(completions)
