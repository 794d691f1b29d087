"""Classification metrics over numpy arrays of class indices and probabilities.

For classes ``c`` with true positives ``TP_c``, false positives ``FP_c`` and
false negatives ``FN_c``: precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``,
F1 their harmonic mean (0 where undefined), macro-F1 the unweighted mean of
per-class F1. Deployment metric (as in the WWW'23 paper): for each class,
one-vs-rest, the highest recall reachable at precision >= a target, with the
probability threshold that gives it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``m[i, j]`` counts examples of true class ``i`` predicted as ``j``."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual.astype(np.int64)}


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest PR curve: precision and recall when predicting ``score >= t``
    for every distinct score ``t``, from the highest threshold down."""
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order].astype(float)
    distinct = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # last index of each score
    tp = np.cumsum(positive)[distinct]
    predicted = distinct + 1.0
    n_positive = positive.sum()
    recall = tp / n_positive if n_positive > 0 else np.zeros_like(tp)
    return {"threshold": scores[distinct], "precision": tp / predicted, "recall": recall}


def recall_at_precision(curve: dict[str, np.ndarray], target: float) -> dict[str, Any]:
    """Highest recall with precision >= ``target``; threshold None if unreachable."""
    ok = curve["precision"] >= target
    if not ok.any():
        return {"recall": 0.0, "precision": None, "threshold": None}
    best = np.flatnonzero(ok)[np.argmax(curve["recall"][ok])]
    return {
        "recall": float(curve["recall"][best]),
        "precision": float(curve["precision"][best]),
        "threshold": float(curve["threshold"][best]),
    }


def classification_report(
    y_true: np.ndarray, probabilities: np.ndarray, label_names: Sequence[str], target_precision: float = 0.8
) -> dict[str, Any]:
    """Every metric the evaluation writes, as plain JSON-ready values."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=float)
    y_pred = probabilities.argmax(axis=1)
    n = len(label_names)
    matrix = confusion_matrix(y_true, y_pred, n)
    scores = per_class_scores(matrix)
    per_class, curves = {}, {}
    for i, name in enumerate(label_names):
        curve = precision_recall_curve(probabilities[:, i], y_true == i)
        curves[name] = {key: value.tolist() for key, value in curve.items()}
        per_class[name] = {
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(scores["support"][i]),
            f"recall_at_precision_{target_precision}": recall_at_precision(curve, target_precision),
        }
    return {
        "examples": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(scores["f1"].mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "labels": list(label_names),
        "target_precision": target_precision,
        "pr_curves": curves,
    }
