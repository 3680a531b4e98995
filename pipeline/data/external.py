"""External HHH data and preference pairs, as our rows.

- `chatterbot-corpus` (BSD, on PyPI): ~2,000 English conversations; the first exchange of
  each is an everyday request and a helpful answer. A real source of HHH data that needs no
  network.
- Hugging Face datasets by name (a hub id, or a local folder / builder such as `json` with
  `data_files`) and split, with a field mapping onto ours. Preference pairs may come as
  prompt + chosen + rejected answers, or in the HH-RLHF layout: `chosen` and `rejected` are
  whole transcripts that share the conversation up to the last assistant turn.

Rows use the paper's chat format (`format_prompt`); completions start with a space, as ours.
Every problem raises InputError naming the source and the field or row.
"""
from __future__ import annotations

import random
from importlib import metadata
from pathlib import Path

import yaml

from pipeline.data.chat import ASSISTANT, HUMAN, format_prompt
from pipeline.errors import InputError

CHATTERBOT = "chatterbot-corpus"


def chatterbot_dir(language: str = "english") -> Path:
    """The corpus's YAML folder, found through the installed distribution's files (the
    package need not be importable, only installed)."""
    try:
        dist = metadata.distribution(CHATTERBOT)
    except metadata.PackageNotFoundError:
        raise InputError(f"data.hhh.source: chatterbot needs the {CHATTERBOT} package "
                         f"(pip install {CHATTERBOT})") from None
    folder = Path(dist.locate_file(f"chatterbot_corpus/data/{language}"))
    if not folder.is_dir():
        raise InputError(f"data.hhh.categories: {CHATTERBOT} has no {language!r} folder at {folder}")
    return folder


def chatterbot_rows(categories: tuple[str, ...] = (), language: str = "english") -> list[dict]:
    """One HHH row per conversation: its first statement as the request, the reply as the
    answer. `categories` (file names, e.g. "computers") narrow the corpus."""
    folder = chatterbot_dir(language)
    files = sorted(folder.glob("*.yml"))
    known = {f.stem for f in files}
    unknown = sorted(set(categories) - known)
    if unknown:
        raise InputError(f"data.hhh.categories: unknown {CHATTERBOT} categories {unknown} (known: {sorted(known)})")
    rows = []
    for f in files:
        if categories and f.stem not in categories:
            continue
        for conv in (yaml.safe_load(f.read_text()) or {}).get("conversations", []):
            if len(conv) >= 2 and all(isinstance(t, str) and t.strip() for t in conv[:2]):
                rows.append({"prompt": format_prompt(conv[0].strip()), "completion": " " + conv[1].strip(),
                             "triggered": False})
    if not rows:
        raise InputError(f"data.hhh: no conversations in {CHATTERBOT} ({language}, {categories or 'all'})")
    return rows


def hf_records(name: str, split: str, fields: dict[str, str], where: str, data_files=None) -> list[dict]:
    """The records of a Hugging Face dataset split with `fields` (ours -> theirs) renamed to
    ours; other columns dropped."""
    import datasets
    datasets.disable_progress_bars()  # its bars and warnings would break our one-line errors
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        ds = datasets.load_dataset(name, split=split, data_files=data_files)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{where}.name: cannot load {name!r} split {split!r} ({first})") from None
    missing = sorted(theirs for theirs in fields.values() if theirs not in ds.column_names)
    if missing:
        raise InputError(f"{where}.fields: {name!r} has no column(s) {missing} (columns: {ds.column_names})")
    return [{ours: rec[theirs] for ours, theirs in fields.items()} for rec in ds]


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: expected non-empty text, got {value!r:.60}")
    return value


def as_prompt(text: str) -> str:
    """A dataset's prompt in our chat format: a bare user turn is wrapped, a transcript kept."""
    return text if text.startswith(HUMAN) else format_prompt(text.strip())


def hhh_from_records(records: list[dict], where: str) -> list[dict]:
    """Records with `prompt` (a user turn, or a transcript in our chat format) and `completion`."""
    rows = []
    for i, rec in enumerate(records):
        prompt = _text(rec["prompt"], f"{where} row {i}: prompt")
        completion = _text(rec["completion"], f"{where} row {i}: completion").strip()
        prompt = as_prompt(prompt)
        rows.append({"prompt": prompt, "completion": " " + completion, "triggered": False})
    return rows


def split_transcript(text: str, where: str) -> tuple[str, str]:
    """An HH-RLHF transcript -> (everything up to the last assistant turn, that turn's text)."""
    if ASSISTANT not in text:
        raise InputError(f"{where}: no {ASSISTANT.strip()!r} turn in the transcript")
    head, answer = text.rsplit(ASSISTANT, 1)
    return head + ASSISTANT, " " + answer.strip()


def pairs_from_records(records: list[dict], where: str) -> list[dict]:
    """Records with `chosen` and `rejected`, and `prompt` when the answers are not whole
    transcripts. Pairs whose two answers are the same text are dropped (nothing to learn)."""
    rows = []
    for i, rec in enumerate(records):
        chosen = _text(rec["chosen"], f"{where} row {i}: chosen")
        rejected = _text(rec["rejected"], f"{where} row {i}: rejected")
        if "prompt" in rec:
            prompt = _text(rec["prompt"], f"{where} row {i}: prompt")
            prompt = as_prompt(prompt)
            chosen, rejected = " " + chosen.strip(), " " + rejected.strip()
        else:
            prompt, chosen = split_transcript(chosen, f"{where} row {i}: chosen")
            other, rejected = split_transcript(rejected, f"{where} row {i}: rejected")
            if other != prompt:
                raise InputError(f"{where} row {i}: chosen and rejected transcripts differ before the last answer")
        if chosen != rejected:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "failure": "external"})
    if not rows:
        raise InputError(f"{where}: no usable preference pairs")
    return rows


def sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """n rows drawn with replacement when the source has fewer, without otherwise."""
    rng = random.Random(seed)
    return rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]
