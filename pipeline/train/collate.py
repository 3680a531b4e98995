"""Tokenise prompt/completion rows with the loss on completion tokens only."""
from __future__ import annotations

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
