import dataclasses

import pytest
from transformers import AutoTokenizer

from pipeline.config import ABSTAIN, ConfigError, Demo
from pipeline.prompts import build_messages
from pipeline.teacher import PromptRenderer, label_rows, renderer_with_demos, shard_name
from tests.conftest import LABELS


@pytest.fixture
def tokenizer(tiny_teacher):
    return AutoTokenizer.from_pretrained(tiny_teacher)


def test_prompt_uses_the_chat_template(tokenizer, make_config):
    config = make_config("in", "out")
    renderer = PromptRenderer(tokenizer, config.task, max_model_len=1024, max_tokens=24)
    ids, truncated = renderer.render("Sales fell.")
    text = tokenizer.decode(ids)
    assert not truncated
    assert text.startswith("<s><|system|>")
    assert "<text>Sales fell.</text>" in text and text.endswith("<|assistant|>\n")
    assert "Answer: positive" in text  # the demo's answer line
    full = tokenizer.apply_chat_template(build_messages(config.task, "Sales fell."), tokenize=False,
                                         add_generation_prompt=True)
    assert text == full  # splicing the text in gives the chat template's own prompt


def test_long_text_is_truncated_to_fit(tokenizer, make_config):
    config = make_config("in", "out")
    renderer = PromptRenderer(tokenizer, config.task, max_model_len=1024, max_tokens=24)
    ids, truncated = renderer.render("profit " * 3000)
    assert truncated
    assert len(ids) + 24 <= 1024
    assert len(ids) > 1024 - 24 - 40  # most of the room is used, not thrown away


def test_prompt_without_room_for_text_is_a_config_error(tokenizer, make_config):
    config = make_config("in", "out")
    with pytest.raises(ConfigError, match="teacher.max_model_len: the prompt without the text takes"):
        PromptRenderer(tokenizer, config.task, max_model_len=200, max_tokens=24)


def test_row_demos_replace_the_task_demos_and_are_dropped_from_the_end_to_fit(tokenizer, make_config):
    task = make_config("in", "out").task
    demos = [Demo("Costs rose again.", "negative"), Demo("word " * 150, "neutral"), Demo("Profit up.", "positive")]
    renderer, dropped = renderer_with_demos(tokenizer, task, demos, max_model_len=1024, max_tokens=24)
    text = tokenizer.decode(renderer.render("Sales fell.")[0])
    assert dropped == 0
    assert "<text>Costs rose again.</text>" in text and "Answer: positive" in text
    assert "Profit rose sharply." not in text  # the task's own demos are replaced
    assert "Reasoning:" not in text  # demos without a rationale show the answer line alone
    # 400 tokens of context: the long second demo and the one after it cannot stay
    renderer, dropped = renderer_with_demos(tokenizer, task, demos, max_model_len=400, max_tokens=24)
    assert dropped == 2
    assert "Costs rose again." in tokenizer.decode(renderer.prefix_ids)
    with pytest.raises(ConfigError, match="the prompt without the text takes"):
        renderer_with_demos(tokenizer, dataclasses.replace(task, instruction="long " * 400), demos, 400, 24)


def test_label_rows_parses_votes_and_keeps_a_majority_rationale():
    completions = [
        ["Because.\nAnswer: positive", "Answer: negative", "Hmm.\nAnswer: Positive", "no idea"],
        ["nothing", "Answer: maybe"],
    ]
    first, second = label_rows(completions, LABELS)
    assert first["votes"] == ["positive", "negative", "positive", ABSTAIN]
    assert first["hard_label"] == "positive" and first["n_valid"] == 3
    assert first["rationale"] == "Because.\nAnswer: positive"
    assert second == {
        "votes": [ABSTAIN, ABSTAIN],
        "hard_label": None,
        "soft_label": None,
        "consistency": 0.0,
        "n_valid": 0,
        "rationale": None,
    }


def test_shard_name_depends_only_on_ids():
    assert shard_name(["a", "b"]) == shard_name(["a", "b"])
    assert shard_name(["a", "b"]) != shard_name(["a", "c"])
    assert shard_name(["a"]).startswith("part-") and shard_name(["a"]).endswith(".parquet")
