from pipeline.config import config_from_dict
from pipeline.filters import Candidate
from pipeline.synthesis import extrapolation_messages, parse_examples, parse_reasons, reasons_messages
from tests.conftest import task_dict

LABELS = ["negative", "neutral", "positive"]


def task():
    return config_from_dict({"task": task_dict(), "teacher": {"model": "m"},
                             "data": {"input": "i", "output": "o"}}).task


def test_prompts_name_the_label_and_the_text():
    messages = extrapolation_messages(task(), "Sales fell.", "negative", 3)
    assert "- positive: good news" in messages[0]["content"]
    assert "<text>Sales fell.</text>" in messages[1]["content"]
    assert "Write 3 new, different texts" in messages[1]["content"]
    assert "labelled 'positive'" in reasons_messages(task(), "positive", 5)[1]["content"]


def test_parse_reasons_strips_bullets_and_duplicates():
    completion = "1. Profit grew\n- profit grew!\n* New contracts\n\n2) Expansion abroad\nExtra"
    assert parse_reasons(completion, 3) == ["Profit grew", "New contracts", "Expansion abroad"]


def test_parse_examples():
    completion = 'Text: Sales dropped 20% this year.\n2. "The firm warned of losses."\n\n'
    assert parse_examples(completion, "negative", LABELS) == [
        Candidate("Sales dropped 20% this year.", "negative"),
        Candidate("The firm warned of losses.", "negative"),
    ]


def test_unusable_answers_keep_their_reason():
    assert parse_examples("   \n", "negative", LABELS) == [Candidate(None, "negative", problem="empty answer")]
    assert parse_examples("Label: positive\nText: Profit rose.", "negative", LABELS) == [
        Candidate(None, "negative", problem="another label announced")
    ]
    echoed = parse_examples("Text: Write 3 new, different texts of the same kind", "negative", LABELS,
                            instruction_snippets=["Write 3 new, different texts"])
    assert echoed == [Candidate(None, "negative", problem="instruction echoed")]
    same_label = parse_examples("Label: negative\nText: Costs soared.", "negative", LABELS)
    assert same_label == [Candidate("Costs soared.", "negative")]
