"""Filters for LLM-written training examples: validity, length, duplicates, leakage.

Near duplicates are found with MinHash over word 3-gram shingles and
locality-sensitive hashing: two texts whose shingle sets have Jaccard
similarity ``J`` share a MinHash value with probability ``J``; with ``b``
bands of ``r`` values they become candidates with probability
``1 - (1 - J^r)^b``, and each candidate pair is then checked exactly
(``J >= threshold``). Leakage means being a near duplicate of a validation
or test text: such examples would let the evaluation data into training.

The new examples are few and the training set may be large: the examples are
indexed and the training texts probe the index (:func:`near_duplicates`), so
the training texts can stream through Ray tasks that each hold only the index.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
from typing import Collection, Iterable, Iterator, Optional, Sequence

import numpy as np

_PRIME = (1 << 61) - 1


def normalize_text(text: str) -> str:
    """Lower-case words only: the form duplicates are compared in."""
    return " ".join(re.findall(r"\w+", text.lower()))


def shingles(text: str, n: int = 3) -> set[str]:
    words = normalize_text(text).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """MinHash-LSH index of texts; ``match`` returns the first indexed text at
    Jaccard >= ``threshold`` (exact normalised duplicates always match).

    Every index built with the same ``bands``, ``rows`` and ``seed`` hashes alike,
    in any process: an index of a few texts can be sent to Ray tasks that probe it
    with millions (:func:`near_duplicates`).
    """

    def __init__(self, threshold: float = 0.7, bands: int = 16, rows: int = 4, seed: int = 0):
        self.threshold, self.bands, self.rows = threshold, bands, rows
        rng = np.random.default_rng(seed)
        size = bands * rows
        self._a = rng.integers(1, _PRIME, size=size, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, size=size, dtype=np.uint64)
        self._buckets: dict[tuple[int, bytes], list[int]] = collections.defaultdict(list)
        self._exact: dict[str, list[int]] = collections.defaultdict(list)
        self._shingles: list[set[str]] = []
        self.texts: list[str] = []

    def __len__(self) -> int:
        return len(self.texts)

    def _signature(self, grams: set[str]) -> np.ndarray:
        hashes = np.array(
            [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=7).digest(), "little") for g in grams],
            dtype=np.uint64,
        )
        # (a*h + b) mod p in Python ints would be slow; uint64 wrap-around is a fine universal hash here.
        return (np.outer(hashes, self._a) + self._b).min(axis=0)

    def _keys(self, grams: set[str]) -> list[tuple[int, bytes]]:
        signature = self._signature(grams)
        return [(band, signature[band * self.rows:(band + 1) * self.rows].tobytes()) for band in range(self.bands)]

    def add(self, text: str) -> None:
        grams = shingles(text)
        index = len(self.texts)
        self.texts.append(text)
        self._shingles.append(grams)
        normal = normalize_text(text)
        if normal:
            self._exact[normal].append(index)
        if grams:
            for key in self._keys(grams):
                self._buckets[key].append(index)

    def match(self, text: str) -> Optional[str]:
        index = self.match_index(text)
        return None if index is None else self.texts[index]

    def match_index(self, text: str) -> Optional[int]:
        """Position (in order of ``add``) of a near-duplicate indexed text, or None."""
        return next(self._matches(text), None)

    def matches(self, text: str) -> set[int]:
        """Positions of every indexed text that ``text`` is a near duplicate of."""
        return set(self._matches(text))

    def _matches(self, text: str) -> Iterator[int]:
        """Exact normalised duplicates first (in order of ``add``), then LSH candidates checked exactly."""
        exact = self._exact.get(normalize_text(text), ())
        yield from exact
        grams = shingles(text)
        if not grams or not self._buckets:
            return
        seen: set[int] = set(exact)
        for key in self._keys(grams):
            for index in self._buckets.get(key, ()):
                if index not in seen:
                    seen.add(index)
                    if jaccard(grams, self._shingles[index]) >= self.threshold:
                        yield index


def near_duplicates(index: NearDuplicateIndex, texts: Iterable[Optional[str]]) -> set[int]:
    """Positions in ``index`` of the texts that some of ``texts`` is a near duplicate of.

    Probing a small index with many texts is how a few new examples are checked
    against a large training set: the texts stream past, only the index is held.
    """
    found: set[int] = set()
    for text in texts:
        if text is not None and len(found) < len(index):
            found |= index.matches(text)
    return found


@dataclasses.dataclass(frozen=True)
class Candidate:
    text: Optional[str]  # None when the answer held no usable example
    label: str
    problem: Optional[str] = None  # set by the parser: why the answer is unusable


def filter_candidates(
    candidates: Sequence[Candidate],
    label_names: Sequence[str],
    evaluation_texts: Iterable[str],
    min_chars: int = 8,
    max_chars: int = 1000,
    threshold: float = 0.7,
    training_duplicates: Collection[int] = (),
) -> tuple[list[Candidate], dict[str, int]]:
    """Keep the usable, new, non-leaking candidates; count every drop by reason.

    Checked in order: parse problem, label outside the set, length bounds,
    leakage (near duplicate of an evaluation text), near duplicate of a
    training text (``training_duplicates``: positions in ``candidates``, found by
    :func:`candidate_index` and :func:`near_duplicates` over the training set,
    wherever it is), near duplicate of an earlier kept candidate.
    """
    evaluation = NearDuplicateIndex(threshold)
    for text in evaluation_texts:
        evaluation.add(text)
    seen = NearDuplicateIndex(threshold)
    kept: list[Candidate] = []
    dropped: collections.Counter[str] = collections.Counter()
    for position, candidate in enumerate(candidates):
        reason = _reject_reason(candidate, label_names, min_chars, max_chars, evaluation)
        if reason is None and position in training_duplicates:
            reason = "near duplicate of a training text"
        if reason is None and seen.match_index(candidate.text) is not None:
            reason = "near duplicate of another new example"
        if reason:
            dropped[reason] += 1
            continue
        kept.append(candidate)
        seen.add(candidate.text)
    return kept, dict(dropped)


def candidate_index(candidates: Sequence[Candidate], threshold: float) -> NearDuplicateIndex:
    """The candidates' texts indexed in order (an unusable candidate as an empty text, which matches
    nothing), to be probed with the training texts by :func:`near_duplicates`."""
    index = NearDuplicateIndex(threshold)
    for candidate in candidates:
        index.add(candidate.text if not candidate.problem and candidate.text else "")
    return index


def _reject_reason(candidate, label_names, min_chars, max_chars, evaluation) -> Optional[str]:
    if candidate.problem:
        return candidate.problem
    text = (candidate.text or "").strip()
    if candidate.label not in label_names:
        return "label not in the label set"
    if len(text) < min_chars:
        return "too short"
    if len(text) > max_chars:
        return "too long"
    if evaluation.match(text) is not None:
        return "near duplicate of a validation or test text"
    return None
