import pytest

from pipeline.config import config_from_dict
from pipeline.filters import Candidate
from pipeline.synthesis import (
    Mix, extrapolation_messages, mixing_messages, mixing_plan, parse_examples, parse_reasons, reasons_messages,
)
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


def test_mixing_plan_covers_every_class_with_another_class():
    plan = mixing_plan(LABELS, per_class=10, per_request=4, alpha_min=0.5, alpha_max=0.9, seed=1)
    # 10 examples per class in requests of 4, 4 and 2
    assert [(m.label, m.n) for m in plan] == [(label, n) for label in LABELS for n in (4, 4, 2)]
    assert all(m.partner != m.label and m.partner in LABELS for m in plan)
    assert all(0.5 <= m.alpha <= 0.9 for m in plan)
    assert plan == mixing_plan(LABELS, 10, 4, 0.5, 0.9, seed=1)  # a rerun asks the same
    assert plan != mixing_plan(LABELS, 10, 4, 0.5, 0.9, seed=2)
    # two classes: the partner is always the other one; a fixed ratio stays fixed
    pair = mixing_plan(["no", "yes"], per_class=3, per_request=5, alpha_min=0.75, alpha_max=0.75, seed=0)
    assert pair == [Mix("no", "yes", 0.75, 3), Mix("yes", "no", 0.75, 3)]
    with pytest.raises(ValueError, match="the task has 1 label"):
        mixing_plan(["only"], 3, 3, 0.5, 0.9, seed=0)


def test_mixing_prompt_describes_both_classes_and_the_ratio():
    user = mixing_messages(task(), Mix("negative", "positive", 0.7, 3))[1]["content"]
    assert "Class 'negative': bad news" in user and "Class 'positive': good news" in user
    assert "Write 3 different texts that are 70% about class 'negative' and 30% about class 'positive'" in user
    assert "should still be labelled 'negative'" in user
