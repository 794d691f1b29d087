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
from typing import Optional, Sequence

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


def _low_component(x: np.ndarray) -> np.ndarray:
    """True where the low-mean component of a 2-component mixture fitted to ``x`` is likelier."""
    return low_component_mask(x, fit_mixture(x))


def fit_mixture(
    x: np.ndarray, weights: Optional[np.ndarray] = None, start: Optional[tuple[float, float, float]] = None,
    iterations: int = 100,
) -> dict[str, list[float]]:
    """EM for a 2-component 1-D Gaussian mixture over ``x`` (each point counted ``weights`` times).

    It starts from the means ``min`` and ``max`` and both variances ``var`` of the data, given as
    ``start = (min, max, var)`` when ``x`` is a histogram's bin centres rather than the data itself.
    Returns ``{"mean", "var", "weight"}``, two values each.
    """
    x = np.asarray(x, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if start is None:
        start = (x.min(), x.max(), float(np.average((x - np.average(x, weights=w)) ** 2, weights=w)))
    mean = np.array(start[:2], dtype=float)
    var = np.full(2, max(start[2], 1e-6))
    weight = np.array([0.5, 0.5])
    for _ in range(iterations):
        resp = _responsibilities(x, mean, var, weight)
        total = (resp * w[:, None]).sum(axis=0) + 1e-12
        new_mean = (resp * (w * x)[:, None]).sum(axis=0) / total
        var = np.maximum((resp * w[:, None] * (x[:, None] - new_mean) ** 2).sum(axis=0) / total, 1e-6)
        weight = total / total.sum()
        if np.allclose(new_mean, mean, atol=1e-9):
            mean = new_mean
            break
        mean = new_mean
    return {"mean": mean.tolist(), "var": var.tolist(), "weight": weight.tolist()}


def low_component_mask(x: np.ndarray, mixture: dict[str, list[float]]) -> np.ndarray:
    """True where the mixture's low-mean component has the higher posterior (above 0.5)."""
    mean = np.asarray(mixture["mean"])
    resp = _responsibilities(np.asarray(x, dtype=float), mean, np.asarray(mixture["var"]),
                             np.asarray(mixture["weight"]))
    return resp[:, int(np.argmin(mean))] > 0.5


def _responsibilities(x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray) -> np.ndarray:
    log_p = np.log(weight) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x[:, None] - mean) ** 2 / var
    log_p -= log_p.max(axis=1, keepdims=True)
    resp = np.exp(log_p)
    return resp / resp.sum(axis=1, keepdims=True)


# -- the same split over data too large for one process -------------------------------------------
#
# A row's order key is its loss's float32 bits, made to sort as unsigned integers, above 32 bits of a
# hash of its id: keys sort rows by loss, ties in a fixed, position-free order. The rows of a class
# up to its k-th key are its k lowest-loss rows; that key is found by counting the keys' 16-bit
# digits, most significant first, over as many passes as it takes (two for distinct losses).

DIGIT_BITS = 16
TOP_SHIFT = 64 - DIGIT_BITS


def sortable_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as uint32 that sort as the floats do (-0.0 as 0.0)."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def from_sortable_bits(bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits, dtype=np.uint32)
    positive = (bits >> np.uint32(31)).astype(bool)
    return np.where(positive, bits & np.uint32(0x7FFFFFFF), ~bits).astype(np.uint32).view(np.float32)


def order_keys(losses: np.ndarray, id_hashes: np.ndarray) -> np.ndarray:
    """uint64 keys: the loss's sortable bits, then the low 32 bits of the id's hash."""
    return ((sortable_bits(losses).astype(np.uint64) << np.uint64(32))
            | (np.asarray(id_hashes, dtype=np.uint64) & np.uint64(0xFFFFFFFF)))


def next_digit(prefix: int, need: int, shift: int, digits: np.ndarray, counts: np.ndarray) -> tuple[int, int, bool]:
    """One step of the k-th key search. Rows whose key starts with ``prefix`` (the bits above ``shift``
    + 16) have these ``digits`` (bits ``shift`` .. ``shift`` + 15) with these ``counts``; the wanted key is
    the ``need``-th smallest of them. Returns the longer prefix, the rank still needed within it, and
    whether the search is over: every row with that prefix is wanted (or no bits are left)."""
    order = np.argsort(digits, kind="stable")
    digits, counts = np.asarray(digits)[order], np.asarray(counts)[order]
    cumulative = np.cumsum(counts)
    i = int(np.searchsorted(cumulative, need))
    below = int(cumulative[i - 1]) if i else 0
    prefix |= int(digits[i]) << shift
    need -= below
    return prefix, need, bool(counts[i] == need or shift == 0)


def key_ceiling(prefix: int, shift: int) -> int:
    """The largest key that starts with ``prefix`` (resolved above bit ``shift``)."""
    return prefix | ((1 << shift) - 1)


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
