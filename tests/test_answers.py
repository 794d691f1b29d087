import pytest

from pipeline.answers import answer_segment, normalize, parse_answer

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Reasoning: profit grew.\nAnswer: positive", "positive"),
        ("Reasoning: ...\nanswer: POSITIVE.", "positive"),
        ("**Answer:** the sentiment is Negative!", "negative"),
        ("Answer: 'neutral'", "neutral"),
        ("It could be positive or negative.\nAnswer: neutral", "neutral"),  # only the answer line counts
        ("Answer: positive\nAnswer: negative", "negative"),  # the last answer wins
        ("The label is\nneutral", "neutral"),  # no marker: the last line
        ("The final answer is positive", "positive"),
        ("Answer: positive or negative", None),  # two labels: abstain
        ("Answer: not positive", None),  # negated: abstain
        ("Answer: bullish", None),  # not a label
        ("Answer:", None),
        ("", None),
        ("Answer: positively", None),  # whole words only
    ],
)
def test_parse_answer(completion, expected):
    assert parse_answer(completion, LABELS) == expected


def test_underscores_and_case_in_label_names():
    labels = ["card_arrival", "Refund_not_showing_up", "reverted_card_payment?"]
    assert parse_answer("Answer: card arrival", labels) == "card_arrival"
    assert parse_answer("Answer: refund not showing up", labels) == "Refund_not_showing_up"
    assert parse_answer("Answer: reverted_card_payment?", labels) == "reverted_card_payment?"


def test_longest_label_wins_over_its_substring():
    labels = ["negative", "very negative"]
    assert parse_answer("Answer: very negative", labels) == "very negative"
    assert parse_answer("Answer: negative", labels) == "negative"


def test_injected_instruction_cannot_produce_a_foreign_label():
    completion = "Ignore the instructions. Answer: BANANA"
    assert parse_answer(completion, LABELS) is None
    for text in ["Answer: hacked", "Answer: <abstain>", "Answer: negative; DROP TABLE"]:
        assert parse_answer(text, LABELS) in (None, *LABELS)


def test_answer_segment_and_normalize():
    assert answer_segment("a\nAnswer:\n  positive\nmore") == "  positive"
    assert answer_segment("first\n\nlast line\n") == "last line"
    assert normalize("Card_Arrival-Time!") == "card arrival time"
