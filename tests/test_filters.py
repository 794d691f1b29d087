from pipeline.filters import (Candidate, NearDuplicateIndex, candidate_index, filter_candidates, jaccard,
                              near_duplicates, normalize_text, shingles)

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
    duplicates = near_duplicates(candidate_index(candidates, 0.7), training)
    assert duplicates == {6}  # the training text again, with capitals
    kept, dropped = filter_candidates(candidates, LABELS, evaluation, min_chars=8, max_chars=500,
                                      training_duplicates=duplicates)
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


def test_an_index_of_few_texts_probed_by_many_finds_every_near_duplicate_and_nothing_else():
    """The streamed filter's direction: new examples indexed, training texts probing. It finds what
    indexing the training texts and probing with the examples finds."""
    import random

    rng = random.Random(3)
    words = "profit sales rose fell market shares quarter growth loss company orders record demand".split()
    training = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) for _ in range(400)]
    examples = [training[5], training[9] + " again", "completely new words about weather and rain today",
                training[20].upper(), ""]
    index = candidate_index([Candidate(text or None, "positive", problem=None if text else "empty")
                             for text in examples], 0.7)
    probed = near_duplicates(index, [*training, None])
    reference = NearDuplicateIndex(0.7)
    for text in training:
        reference.add(text)
    expected = {i for i, text in enumerate(examples) if text and reference.match(text) is not None}
    assert probed == expected and {0, 3} <= probed and 2 not in probed and 4 not in probed
    # and every match is a real one: the same normalised text, or Jaccard at least the threshold
    for i in probed:
        assert any(normalize_text(examples[i]) == normalize_text(t)
                   or jaccard(shingles(examples[i]), shingles(t)) >= 0.7 for t in training)
