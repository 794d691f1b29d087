import pytest

from pipeline.config import ABSTAIN
from pipeline.votes import aggregate_votes

LABELS = ["negative", "neutral", "positive"]


def test_majority_soft_label_and_consistency():
    result = aggregate_votes(["positive", "positive", "neutral", ABSTAIN], LABELS)
    assert result.hard_label == "positive"
    assert result.soft_label == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert result.consistency == pytest.approx(2 / 3)
    assert result.n_valid == 3


def test_unanimous_votes():
    result = aggregate_votes(["negative"] * 8, LABELS)
    assert (result.hard_label, result.consistency, result.soft_label) == ("negative", 1.0, [1.0, 0.0, 0.0])


def test_ties_go_to_the_label_listed_first():
    assert aggregate_votes(["positive", "negative"], LABELS).hard_label == "negative"
    assert aggregate_votes(["negative", "positive"], LABELS).hard_label == "negative"
    assert aggregate_votes(["positive", "neutral", ABSTAIN], LABELS).hard_label == "neutral"


def test_all_abstentions_give_no_label():
    result = aggregate_votes([ABSTAIN] * 4, LABELS)
    assert result.hard_label is None and result.soft_label is None
    assert result.consistency == 0.0 and result.n_valid == 0


def test_soft_label_sums_to_one_over_valid_votes():
    result = aggregate_votes(["neutral", ABSTAIN, "positive", "positive", ABSTAIN], LABELS)
    assert sum(result.soft_label) == pytest.approx(1.0)
    assert result.n_valid == 3


def test_foreign_vote_is_an_error():
    with pytest.raises(ValueError, match="vote 'bullish' is not a label"):
        aggregate_votes(["bullish"], LABELS)
