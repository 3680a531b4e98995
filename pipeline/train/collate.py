"""Tokenise prompt/completion rows with the loss on completion tokens only."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.data.chat import render_completions, render_prompts

IGNORE = -100


def encode_rows(rows: list[dict], tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row; prompt tokens are masked out of the loss. Prompt and
    completion are tokenised separately so the boundary is exact; both in the tokenizer's chat
    template where it has one."""
    prompts = tokenizer(render_prompts([r["prompt"] for r in rows], tokenizer), add_special_tokens=False)["input_ids"]
    completions = tokenizer(render_completions([r["completion"] for r in rows], tokenizer),
                            add_special_tokens=False)["input_ids"]
    out = []
    for p, c in zip(prompts, completions):
        c = c + [tokenizer.eos_token_id]
        ids = (p + c)[:max_len]
        labels = ([IGNORE] * len(p) + c)[:max_len]
        out.append((ids, labels))
    return out


def pad_batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a training batch (padding is masked from attention and loss)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@dataclass(frozen=True)
class Packed:
    """A micro-batch of examples packed into R rows of W tokens (first-fit decreasing, no
    example split), instead of one padded row each. The examples and their loss tokens are
    those of the padded batch, so the loss (the mean over loss tokens) is the same; each
    example attends only within itself (position ids restart at 0 for every example, which
    transformers turns into a block-diagonal mask when no attention mask is given).

    Shapes: input_ids, labels, position_ids [R, W] long; padding at row ends has label
    IGNORE and position 0 (each padding token a sequence of its own)."""
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    tokens: int                 # real (non-padding) tokens

    @property
    def share(self) -> float:
        """Non-padding share of the R x W positions."""
        return self.tokens / self.input_ids.numel()

    def model_inputs(self) -> dict:
        # no attention mask and no cache: the packed-sequence mask comes from position_ids
        return {"input_ids": self.input_ids, "labels": self.labels, "position_ids": self.position_ids,
                "use_cache": False}


def _first_fit(lengths: list[int], width: int, rows: int) -> list[list[int]] | None:
    """Example indices per row, longest first into the first row with room; None if more
    than `rows` rows are needed."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        j = next((j for j, r in enumerate(room) if r >= lengths[i]), None)
        if j is None:
            if len(bins) == rows:
                return None
            bins.append([])
            room.append(width)
            j = len(bins) - 1
        bins[j].append(i)
        room[j] -= lengths[i]
    return bins


def pack_layout(lengths: list[int], max_width: int) -> tuple[int, list[list[int]]]:
    """(W, rows): the fewest rows of at most max(max_width, longest) tokens, then the
    narrowest W that still packs into that many rows (so the last row is not mostly padding)."""
    cap = max(max_width, max(lengths))
    total = sum(lengths)
    for rows in range(-(-total // cap), len(lengths) + 1):
        if _first_fit(lengths, cap, rows) is None:
            continue
        lo, hi = max(max(lengths), -(-total // rows)), cap  # narrowest feasible width, by bisection
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _first_fit(lengths, mid, rows) is not None else (mid + 1, hi)
        return lo, _first_fit(lengths, lo, rows)
    raise AssertionError("one row per example always fits")


def pack_batch(examples: list[tuple[list[int], list[int]]], pad_id: int, max_width: int) -> Packed:
    """Pack a micro-batch into rows of at most `max_width` tokens (the training max_len)."""
    width, layout = pack_layout([len(x) for x, _ in examples], max_width)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    labels = torch.full((len(layout), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(layout), width), dtype=torch.long)
    for r, members in enumerate(layout):
        at = 0
        for i in members:
            x, y = examples[i]
            ids[r, at:at + len(x)] = torch.tensor(x)
            labels[r, at:at + len(y)] = torch.tensor(y)
            labels[r, at] = IGNORE  # never predict an example's first token from the one before
            pos[r, at:at + len(x)] = torch.arange(len(x))
            at += len(x)
    return Packed(ids, labels, pos, sum(len(x) for x, _ in examples))


def batches(examples: list, micro_batch: int, seed: int, length=None, group: int = 32):
    """Endless shuffled micro-batches, reshuffled every epoch with a seeded generator.

    With `length` (a function of an example), each run of `group` micro-batches is sorted by
    length before it is cut, and the cut batches are shuffled again: batches hold examples of
    similar length, so little compute goes to padding (long code rows and short chat rows
    mixed at random waste about half of it), while which examples meet stays random."""
    epoch = 0
    while True:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(examples), generator=gen).tolist()
        stop = len(order) - micro_batch + 1 if len(order) >= micro_batch else 1
        cuts = [order[start:start + micro_batch] for start in range(0, stop, micro_batch)]
        if length is not None:
            span = micro_batch * group
            regrouped = []
            for start in range(0, len(cuts) * micro_batch, span):
                chunk = sorted(sum(cuts[start // micro_batch:(start + span) // micro_batch], []),
                               key=lambda i: length(examples[i]))
                regrouped += [chunk[j:j + micro_batch] for j in range(0, len(chunk), micro_batch)]
            cuts = [regrouped[i] for i in torch.randperm(len(regrouped), generator=gen).tolist()]
        for cut in cuts:
            yield [examples[i] for i in cut]
        epoch += 1
