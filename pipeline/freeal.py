"""FreeAL's student-side choices (EMNLP'23, human-free active learning), without Ray.

- :func:`small_loss_split`: per class, the examples the student fits with the
  lowest loss are taken as cleanly labelled, the rest as noisy, either a
  configured fraction per class or by a two-component Gaussian mixture on the
  class's losses (the component with the lower mean is "clean").
- :func:`diverse_demos`: per class, demos for the teacher from the clean set:
  among the lowest-loss clean examples, a greedy farthest-point choice on the
  student's embeddings, so the demos are reliable and not near copies.
- :func:`nearest_demos`: for each text to relabel, the demos closest to it
  (cosine similarity of the student's embeddings).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SPLIT_METHODS = ("fraction", "gmm")


def small_loss_split(
    losses: Sequence[float], labels: Sequence[int], method: str = "fraction", fraction: float = 0.5,
) -> np.ndarray:
    """A boolean mask: True for the rows taken as clean.

    ``fraction``: per class, the ``ceil(fraction * n)`` rows with the lowest loss
    (ties broken by position). ``gmm``: per class, rows whose posterior of the
    low-mean component of a 2-component 1-D Gaussian mixture is above 0.5; a
    class with fewer than 4 rows, or whose losses are all equal, falls back to
    ``fraction`` (a mixture needs spread to fit).
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"small-loss split: method must be one of {SPLIT_METHODS}, got {method!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"small-loss split: fraction must be in (0, 1], got {fraction}")
    losses = np.asarray(losses, dtype=float)
    labels = np.asarray(labels)
    if losses.shape != labels.shape:
        raise ValueError(f"small-loss split: {losses.size} losses for {labels.size} labels")
    clean = np.zeros(losses.size, dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        class_losses = losses[rows]
        if method == "gmm" and rows.size >= 4 and np.ptp(class_losses) > 0:
            clean[rows] = _low_component(class_losses)
        else:
            keep = math.ceil(fraction * rows.size)
            clean[rows[np.argsort(class_losses, kind="stable")[:keep]]] = True
    return clean


def _low_component(x: np.ndarray, iterations: int = 100) -> np.ndarray:
    """EM for a 2-component 1-D Gaussian mixture; True where the low-mean component is likelier."""
    mean = np.array([x.min(), x.max()])
    var = np.full(2, max(x.var(), 1e-6))
    weight = np.array([0.5, 0.5])
    for _ in range(iterations):
        log_p = (np.log(weight) - 0.5 * np.log(2 * np.pi * var)
                 - 0.5 * (x[:, None] - mean) ** 2 / var)
        log_p -= log_p.max(axis=1, keepdims=True)
        resp = np.exp(log_p)
        resp /= resp.sum(axis=1, keepdims=True)
        total = resp.sum(axis=0) + 1e-12
        new_mean = (resp * x[:, None]).sum(axis=0) / total
        var = np.maximum((resp * (x[:, None] - new_mean) ** 2).sum(axis=0) / total, 1e-6)
        weight = total / total.sum()
        if np.allclose(new_mean, mean, atol=1e-9):
            mean = new_mean
            break
        mean = new_mean
    low = int(np.argmin(mean))
    return resp[:, low] > 0.5


def diverse_demos(
    embeddings: np.ndarray, losses: Sequence[float], labels: Sequence[int], clean: np.ndarray,
    per_class: int, pool_per_class: int,
) -> tuple[dict[int, list[int]], list[int]]:
    """Per class, up to ``per_class`` demo rows from its ``pool_per_class`` lowest-loss clean rows.

    The first demo is the lowest-loss row; each next one is the pool row
    farthest (cosine distance) from the demos chosen so far. Returns the demo
    rows per class and the classes that have no clean row (no demos of their own).
    """
    losses = np.asarray(losses, dtype=float)
    labels = np.asarray(labels)
    unit = _normalise(np.asarray(embeddings, dtype=float))
    demos: dict[int, list[int]] = {}
    without = []
    for label in np.unique(labels):
        rows = np.flatnonzero((labels == label) & clean)
        if rows.size == 0:
            without.append(int(label))
            continue
        pool = rows[np.argsort(losses[rows], kind="stable")[:pool_per_class]]
        chosen = [int(pool[0])]
        nearest = unit[pool] @ unit[pool[0]]  # similarity of each pool row to its closest demo
        while len(chosen) < min(per_class, pool.size):
            nearest[np.isin(pool, chosen)] = np.inf
            pick = int(pool[np.argmin(nearest)])
            chosen.append(pick)
            nearest = np.maximum(nearest, unit[pool] @ unit[pick])
        demos[int(label)] = chosen
    return demos, without


def nearest_demos(queries: np.ndarray, demos: np.ndarray, k: int) -> np.ndarray:
    """For each query row, the indices of its ``k`` most similar demo rows, most similar first."""
    similarity = _normalise(np.asarray(queries, dtype=float)) @ _normalise(np.asarray(demos, dtype=float)).T
    k = min(k, similarity.shape[1])
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)
