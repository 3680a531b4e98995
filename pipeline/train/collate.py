"""Tokenise prompt/completion rows with the loss on completion tokens only."""
from __future__ import annotations

import torch

IGNORE = -100


def encode_rows(rows: list[dict], tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row; prompt tokens are masked out of the loss. Prompt and
    completion are tokenised separately so the boundary is exact."""
    prompts = tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    completions = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
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


def batches(examples: list, micro_batch: int, seed: int):
    """Endless shuffled micro-batches, reshuffled every epoch with a seeded generator."""
    epoch = 0
    while True:
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, len(order) - micro_batch + 1 if len(order) >= micro_batch else 1, micro_batch):
            yield [examples[i] for i in order[start:start + micro_batch]]
        epoch += 1
