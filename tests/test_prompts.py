import dataclasses

from pipeline.config import Demo, config_from_dict
from pipeline.prompts import build_messages, fold_system_into_user, prompt_hash
from tests.conftest import task_dict


def task():
    return config_from_dict(
        {"task": task_dict(), "teacher": {"model": "m"}, "data": {"input": "i", "output": "o"}}
    ).task


def test_messages_hold_instruction_labels_demos_and_text():
    messages = build_messages(task(), "Sales fell 10%.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert "Classify the sentiment" in system
    assert "- negative: bad news" in system and "- positive: good news" in system
    assert "exactly one of: negative, neutral, positive" in system
    assert messages[1]["content"] == "<text>Profit rose sharply.</text>"
    assert messages[2]["content"] == "Reasoning: Rising profit is good news.\nAnswer: positive"
    assert messages[-1]["content"] == "<text>Sales fell 10%.</text>"


def test_prompt_hash_tracks_the_template_not_the_text():
    base = task()
    assert prompt_hash(base) == prompt_hash(task())
    changed = dataclasses.replace(base, demos=[*base.demos, Demo("x", "neutral", "y")])
    assert prompt_hash(changed) != prompt_hash(base)
    assert len(prompt_hash(base)) == 16


def test_fold_system_into_user():
    messages = fold_system_into_user(build_messages(task(), "t"))
    assert messages[0]["role"] == "user"
    assert messages[0]["content"].startswith("Classify the sentiment")
    assert messages[0]["content"].endswith("<text>Profit rose sharply.</text>")
    assert len(messages) == 5
