"""Which teacher-labelled rows a student trains on.

WWW'23 distils with a consistency filter: ``cls`` keeps rows whose majority
share is at least a threshold (best: all k votes agree, 1.0); ``rgr`` regresses
on soft labels and keeps more rows (best: at least 5 of 8 agree, 0.625).
Rows where every vote abstained carry no label and are never kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_MIN_CONSISTENCY = {"cls": 1.0, "rgr": 0.625, "kl": 0.0}
REPORTED_THRESHOLDS = (0.0, 0.5, 0.625, 0.75, 0.875, 1.0)


def keep_mask(consistency: np.ndarray, n_valid: np.ndarray, min_consistency: float) -> np.ndarray:
    """Rows with at least one valid vote and ``consistency >= min_consistency``.

    A small tolerance absorbs float error (5/8 stored as 0.625000...01).
    """
    consistency = np.asarray(consistency, dtype=float)
    return (np.asarray(n_valid) > 0) & (consistency >= min_consistency - 1e-9)


def kept_at_thresholds(
    consistency: np.ndarray, n_valid: np.ndarray, thresholds: Sequence[float] = REPORTED_THRESHOLDS
) -> dict[str, int]:
    """How many rows each threshold would keep (for the report)."""
    return {f"{t:g}": int(keep_mask(consistency, n_valid, t).sum()) for t in thresholds}
