import numpy as np
import pytest

from pipeline.metrics import (
    classification_report,
    confusion_matrix,
    per_class_scores,
    precision_recall_curve,
    recall_at_precision,
)


def test_confusion_matrix_and_scores_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(y_true, y_pred, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = per_class_scores(matrix)
    # class 0: P=2/2, R=2/3; class 1: P=1/2, R=1/2; class 2: P=1/2, R=1/1
    assert scores["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert scores["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    assert scores["f1"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert scores["support"].tolist() == [3, 2, 1]


def test_class_never_predicted_has_zero_precision_not_nan():
    scores = per_class_scores(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2))
    assert scores["precision"].tolist() == [0.5, 0.0] and scores["f1"][1] == 0.0


def test_precision_recall_curve_by_hand():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    positive = np.array([1, 0, 1, 1, 0], dtype=bool)
    curve = precision_recall_curve(scores, positive)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.3, 0.1]
    assert curve["precision"] == pytest.approx([1.0, 2 / 3, 3 / 4, 3 / 5])
    assert curve["recall"] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert recall_at_precision(curve, 0.7) == {"recall": 1.0, "precision": 0.75, "threshold": 0.3}
    assert recall_at_precision(curve, 0.8) == {"recall": pytest.approx(1 / 3), "precision": 1.0, "threshold": 0.9}
    assert recall_at_precision(precision_recall_curve(scores, ~positive), 0.9)["threshold"] is None


def test_classification_report():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    report = classification_report(np.array([0, 1, 1, 1]), probabilities, ["a", "b"], target_precision=0.8)
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 0], [1, 2]]
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # b's scores 0.8, 0.7, 0.4 are all true b, 0.1 is not: full recall at precision 1 from t=0.4
    assert report["per_class"]["b"]["recall_at_precision_0.8"] == {"recall": 1.0, "precision": 1.0, "threshold": 0.4}
    assert report["per_class"]["a"]["recall_at_precision_0.8"]["threshold"] == 0.9
    assert report["pr_curves"]["a"]["threshold"][0] == 0.9
