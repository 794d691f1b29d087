from pipeline.filters import Candidate, NearDuplicateIndex, filter_candidates, jaccard, normalize_text, shingles

LABELS = ["negative", "neutral", "positive"]


def test_normalize_and_shingles():
    assert normalize_text("Profit ROSE, sharply!") == "profit rose sharply"
    assert shingles("a b c d") == {"a b c", "b c d"}
    assert shingles("a b") == {"a b"} and shingles("...") == set()
    assert jaccard({"x", "y"}, {"y", "z"}) == 1 / 3


def test_near_duplicate_index_finds_rewordings_not_strangers():
    index = NearDuplicateIndex(threshold=0.6)
    base = "operating profit rose to eur 13 million from eur 8 million in the same period last year"
    index.add(base)
    index.add("the annual general meeting will be held in helsinki on 25 march")
    assert index.match(base.upper() + "!") == base  # exact after normalisation
    assert index.match(base.replace("last year", "of last year")) == base  # one word added
    assert index.match("the company cut 150 jobs as demand for paper kept falling") is None


def test_filter_candidates_counts_each_reason():
    training = ["the company cut 150 jobs as demand for its paper products kept falling in europe"]
    evaluation = ["operating profit rose to eur 13 million from eur 8 million in the same period"]
    candidates = [
        Candidate("Net sales grew by 20 percent to a record high this quarter", "positive"),
        Candidate(None, "positive", problem="instruction echoed"),
        Candidate("Sales fell sharply in the quarter", "bullish"),
        Candidate("Bad.", "negative"),
        Candidate("x" * 2000, "neutral"),
        Candidate("Operating profit rose to EUR 13 million from EUR 8 million in the same period", "positive"),
        Candidate("The company cut 150 jobs as demand for its paper products kept falling in Europe", "negative"),
        Candidate("Net sales grew by 20 percent to a record high this quarter!", "positive"),
    ]
    kept, dropped = filter_candidates(candidates, LABELS, training, evaluation, min_chars=8, max_chars=500)
    assert [c.text for c in kept] == ["Net sales grew by 20 percent to a record high this quarter"]
    assert dropped == {
        "instruction echoed": 1,
        "label not in the label set": 1,
        "too short": 1,
        "too long": 1,
        "near duplicate of a validation or test text": 1,
        "near duplicate of a training text": 1,
        "near duplicate of another new example": 1,
    }
    assert len(kept) + sum(dropped.values()) == len(candidates)  # nothing silently dropped
