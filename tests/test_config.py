import copy

import pytest

from pipeline.config import ConfigError, config_from_dict, load_config
from tests.conftest import task_dict

BASE = {
    "task": task_dict(),
    "teacher": {"model": "some/model"},
    "data": {"input": "in.jsonl", "output": "out"},
}


def with_(path: str, value):
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def test_example_config_loads():
    config = load_config("examples/banking_support.yaml")
    assert len(config.task.label_names) == 8 and "card_arrival" in config.task.label_names
    assert config.teacher.samples == 8
    assert config.data.input == "examples/data/banking_support/train.jsonl"
    assert config.distill.mode == "cls" and config.student.max_length == 64


def test_defaults_fill_optional_fields():
    config = config_from_dict(BASE)
    assert config.teacher.samples == 8 and config.teacher.enable_prefix_caching is True
    assert config.data.id_column == "id" and config.storage.endpoint_url is None


def test_int_is_accepted_for_float():
    assert config_from_dict(with_("teacher.temperature", 1)).teacher.temperature == 1.0


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("teacher.temprature", 0.5, "teacher.temprature: unknown key"),
        ("teacher.samples", "eight", "teacher.samples: expected int, got str"),
        ("teacher.samples", True, "teacher.samples: expected int, got bool"),
        ("teacher.samples", 0, "teacher.samples: must be >= 1"),
        ("teacher.top_p", 1.5, "teacher.top_p: must be in (0, 1]"),
        ("teacher.gpu_memory_utilization", 0.0, "teacher.gpu_memory_utilization"),
        ("teacher.temperature", 0.0, "teacher.temperature: 0 makes all samples identical"),
        ("task.labels", [{"name": "only", "description": "x"}], "task.labels: at least two labels"),
        ("task.labels.1.name", "negative", "task.labels[1].name: duplicate label 'negative'"),
        ("task.labels.0.name", "<abstain>", "task.labels[0].name: '<abstain>' is reserved"),
        ("task.demos.0.label", "happy", "task.demos[0].label: 'happy' is not one of"),
        ("task.demos.0", {"text": "t", "rationale": "r"}, "task.demos[0].label: required key is missing"),
        ("data.format", "xml", "data.format: must be auto, parquet, jsonl or csv"),
        ("teacher.tensor_parallel_size", 2, "teacher.gpus_per_actor: 1.0 GPUs cannot hold an engine spread over"),
        ("distill", {"output": "o", "mode": "mse"}, "distill.mode: must be cls, rgr or kl"),
        ("distill", {"output": "o", "min_consistency": 1.5}, "distill.min_consistency: must be in [0, 1]"),
        ("distill", {"output": "o", "checkpoint_every_batches": -1}, "distill.checkpoint_every_batches: must be >= 0"),
        ("distill", {"output": "o", "keep_checkpoints": 0}, "distill.keep_checkpoints: must be >= 1, got 0"),
        ("distill", {"output": "o", "max_failures": -2}, "distill.max_failures: must be >= 0, or -1"),
        ("distill", {"mode": "cls"}, "distill.output: required key is missing"),
        ("storage.aws_secret_access_key", "x", "storage.aws_secret_access_key: unknown key"),
    ],
)
def test_bad_values_name_the_key(path, value, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(with_(path, value))
    assert message in str(err.value)


def test_missing_section_is_named():
    raw = copy.deepcopy(BASE)
    del raw["teacher"]
    with pytest.raises(ConfigError, match="^teacher: required key is missing"):
        config_from_dict(raw)


def test_labels_that_normalise_alike_are_rejected():
    labels = [{"name": "card_arrival", "description": "a"}, {"name": "Card arrival", "description": "b"}]
    raw = with_("task.labels", labels)
    raw["task"]["demos"] = []
    with pytest.raises(ConfigError, match="task.labels\\[1\\].name: 'Card arrival' cannot be told apart"):
        config_from_dict(raw)


def test_load_config_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_validated_like_the_file(tmp_path):
    from pipeline.config import dump_config

    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config_from_dict(BASE)))
    config = load_config(path, ["teacher.samples=3", 'distill.extra_labels=["a", "b"]', "distill.output=o"])
    assert config.teacher.samples == 3 and config.distill.extra_labels == ["a", "b"]
    assert load_config(path) == config_from_dict(BASE)  # dump_config reads back to an equal config
    with pytest.raises(ConfigError, match="teacher.sampels: unknown key"):
        load_config(path, ["teacher.sampels=3"])
    with pytest.raises(ConfigError, match="teacher.samples: expected int, got str 'many'"):
        load_config(path, ["teacher.samples=many"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["teacher.samples"])


def test_rounds_need_a_student_and_a_gold_validation_set():
    raw = copy.deepcopy(BASE)
    raw["rounds"] = {"output": "r"}
    with pytest.raises(ConfigError, match="rounds: needs the distill and student sections"):
        config_from_dict(raw)
    raw.update(student={"model": "s"}, distill={"output": "d", "validation": "v.jsonl"})
    assert config_from_dict(raw).rounds.examples_per_error == 4
    raw["rounds"]["metric"] = "recall"
    with pytest.raises(ConfigError, match="rounds.metric: must be accuracy or macro_f1, got 'recall'"):
        config_from_dict(raw)


def test_promptmix_settings_are_checked():
    raw = copy.deepcopy(BASE)
    raw.update(student={"model": "s"}, distill={"output": "d", "validation": "v.jsonl"},
               rounds={"output": "r", "strategy": "promptmix"})
    assert config_from_dict(raw).rounds.mix_alpha_min == 0.5
    raw["rounds"]["strategy"] = "mixup"
    with pytest.raises(ConfigError, match="rounds.strategy: must be extrapolation, promptmix or freeal, got 'mixup'"):
        config_from_dict(raw)
    raw["rounds"].update(strategy="promptmix", mix_alpha_min=0.3)
    with pytest.raises(ConfigError, match=r"need 0.5 <= min <= max <= 1 .* got 0.3 and 0.9"):
        config_from_dict(raw)
    raw["rounds"].update(mix_alpha_min=0.6, mix_per_request=0)
    with pytest.raises(ConfigError, match="rounds.mix_per_request: must be >= 1, got 0"):
        config_from_dict(raw)
    # Too few classes to mix cannot happen: every task has at least two labels.
    raw["rounds"]["mix_per_request"] = 2
    raw["task"]["labels"] = raw["task"]["labels"][:1]
    raw["task"]["demos"] = [d for d in raw["task"]["demos"] if d["label"] == "negative"]
    with pytest.raises(ConfigError, match="task.labels: at least two labels are needed"):
        config_from_dict(raw)


def test_freeal_settings_are_checked():
    raw = copy.deepcopy(BASE)
    raw.update(student={"model": "s"}, distill={"output": "d", "validation": "v.jsonl"},
               rounds={"output": "r", "strategy": "freeal"})
    assert config_from_dict(raw).rounds.freeal_split == "gmm"
    for key, value, message in [
        ("freeal_split", "median", "rounds.freeal_split: must be gmm or fraction, got 'median'"),
        ("freeal_clean_fraction", 0.0, r"rounds.freeal_clean_fraction: must be in \(0, 1\], got 0.0"),
        ("freeal_pseudo_confidence", 1.5, r"rounds.freeal_pseudo_confidence: must be in \(0, 1\], got 1.5"),
        ("freeal_neighbours", 0, "rounds.freeal_neighbours: must be >= 1, got 0"),
    ]:
        bad = copy.deepcopy(raw)
        bad["rounds"][key] = value
        with pytest.raises(ConfigError, match=message):
            config_from_dict(bad)
