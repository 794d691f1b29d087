"""The model registry, the promotion gate, the drift figures and the scheduling examples (no Ray)."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from pipeline import model_store, storage
from pipeline.config import ConfigError, RetrainConfig, StorageConfig, config_from_dict
from pipeline.drift import distribution_shift, drift_png
from pipeline.registry import Registry, RegistryError, resolve_model
from pipeline.retrain import gate, list_partitions
from pipeline.submit import submit_parser
from pipeline.tasks.classification import Classification
from tests.conftest import LABELS, task_dict

ROOT = Path(__file__).resolve().parents[1]


def a_model(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(tag.encode() * 100)
    model_store.seal(folder, {"labels": LABELS, "max_length": 16, "tag": tag})
    return folder


def test_versions_are_numbered_immutable_and_production_moves_only_when_told(tmp_path):
    registry = Registry.open(str(tmp_path / "root"), StorageConfig())
    assert registry.versions() == [] and registry.production() is None
    with pytest.raises(RegistryError, match="no production model yet"):
        registry.resolve("production")
    first = registry.register(a_model(tmp_path / "m1", "one"), {"run": "dt=1", "train_rows": 10})
    second = registry.register(a_model(tmp_path / "m2", "two"), {"run": "dt=2", "train_rows": 20})
    assert (first, second) == ("v0001", "v0002") and registry.versions() == ["v0001", "v0002"]
    assert registry.info("v0002")["train_rows"] == 20 and registry.version_of_run("dt=1") == "v0001"
    # Each version keeps its own files: registering more never touches an earlier one.
    third = registry.register(a_model(tmp_path / "m3", "three"), {"run": "dt=3"})
    assert third == "v0003"
    assert (tmp_path / "root/models/v0001/model/weights.bin").read_bytes() == b"one" * 100
    with pytest.raises(RegistryError, match=r"'v0009': not in the registry .* \(versions: v0001, v0002, v0003\)"):
        registry.info("v0009")

    registry.promote("v0001", "first")
    registry.promote("v0003", "better")
    assert registry.resolve("production") == ("v0003", registry.model_uri("v0003"))
    with pytest.raises(RegistryError, match="v0003 is production already"):
        registry.promote("v0003", "again")
    assert registry.rollback()["version"] == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    registry.promote("v0002", "hand")
    registry.promote("v0003", "hand")
    with pytest.raises(RegistryError, match="production never held it"):
        registry.rollback("v0003")
    pointer = registry.rollback("v0001")
    assert pointer["version"] == "v0001" and pointer["previous"] == []
    assert [entry["action"] for entry in pointer["log"]] == ["promote", "promote", "rollback", "promote", "promote",
                                                             "rollback"]
    # predict's --registry names a version or production; without it the argument is a folder.
    assert resolve_model("production", str(tmp_path / "root"), StorageConfig()) == (registry.model_uri("v0001"), "v0001")
    assert resolve_model("/some/folder", None, StorageConfig()) == ("/some/folder", None)
    local = model_store.fetch(registry.model_uri("v0002"), StorageConfig(), str(tmp_path / "fetched"))
    assert (local / "weights.bin").read_bytes() == b"two" * 100


def test_a_registration_that_crashed_before_its_version_file_is_not_a_version(tmp_path):
    registry = Registry.open(str(tmp_path / "root"), StorageConfig())
    registry.register(a_model(tmp_path / "m1", "one"), {})
    (tmp_path / "root/models/v0002/model").mkdir(parents=True)  # published, version.json never written
    assert registry.versions() == ["v0001"]
    assert registry.register(a_model(tmp_path / "m2", "two"), {}) == "v0002"
    assert (tmp_path / "root/models/v0002/model/weights.bin").read_bytes() == b"two" * 100


def report(metric: float, recalls: dict[str, float]) -> dict:
    return {"headline": {"accuracy": metric, "macro_f1": metric},
            "per_class": {name: {"recall": value} for name, value in recalls.items()}}


def kind() -> Classification:
    return Classification(config_from_dict({"task": task_dict(), "teacher": {"model": "m"},
                                            "data": {"input": "i", "output": "o"}}).task)


def test_the_gate_promotes_only_a_candidate_better_by_the_margin_whose_class_recalls_hold():
    retrain = RetrainConfig(root="r", input="i", min_improvement=0.01, max_guard_drop=0.05)
    even = {"negative": 0.8, "neutral": 0.8, "positive": 0.8}
    first = gate(report(0.5, even), None, kind(), retrain)
    assert first["promote"] and first["reasons"] == ["no production model yet"]
    better = gate(report(0.82, even), report(0.80, even), kind(), retrain)
    assert better["promote"] and better["improvement"] == pytest.approx(0.02)
    assert not gate(report(0.805, even), report(0.80, even), kind(), retrain)["promote"]  # inside the margin
    # Better on the metric, but one class's recall falls by 0.10 > 0.05: kept out.
    lopsided = gate(report(0.85, {"negative": 0.95, "neutral": 0.70, "positive": 0.9}), report(0.80, even), kind(),
                    retrain)
    assert not lopsided["promote"] and lopsided["recall_drops"]["neutral"] == pytest.approx(0.10)
    assert "neutral (0.800 -> 0.700)" in lopsided["reasons"][-1]
    unguarded = RetrainConfig(root="r", input="i", min_improvement=0.01, guard="none")
    assert gate(report(0.85, {"negative": 0.95, "neutral": 0.70, "positive": 0.9}), report(0.80, even), kind(),
                unguarded)["promote"]
    relabelled = gate(report(0.9, even), None, kind(), retrain, production_labels=["bad", "good"])
    assert not relabelled["promote"] and "production predicts other labels (bad, good)" in relabelled["reasons"][0]
    assert gate(report(0.9, even), None, kind(), retrain, production_labels=LABELS)["promote"]
    with pytest.raises(ConfigError, match="retrain.metric: 'f2' is not a metric"):
        gate(report(0.5, even), None, kind(), RetrainConfig(root="r", input="i", metric="f2"))


def test_label_shift_figures():
    same = distribution_shift({"a": 10, "b": 30}, {"a": 100, "b": 300}, ["a", "b"])
    assert same["total_variation"] == 0 and same["psi"] == 0 and same["psi_alert"] is False
    moved = distribution_shift({"a": 60, "b": 30, "c": 10}, {"a": 20, "b": 40, "c": 40}, ["a", "b", "c"])
    assert moved["total_variation"] == pytest.approx(0.4)
    psi = 0.4 * math.log(0.6 / 0.2) - 0.1 * math.log(0.3 / 0.4) - 0.3 * math.log(0.1 / 0.4)
    assert moved["psi"] == pytest.approx(round(psi, 4))
    assert moved["psi_alert"] is True and moved["largest_change"] == {"label": "a", "new": 0.6, "earlier": 0.2}
    first = distribution_shift({"a": 1, "b": 1}, {}, ["a", "b"])  # no earlier data: no alert either way
    assert first["psi_alert"] is None
    png = drift_png({"label_distribution": moved,
                     "teacher_over_time": [{"partition": "dt=1", "abstention_rate": 0.1, "mean_consistency": 0.8,
                                            "unanimous_share": 0.5}],
                     "student_teacher_agreement": {"candidate": {"agreement": 0.9}, "production": None}})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_partitions_are_the_input_folders_that_hold_files(tmp_path):
    fs = pafs.LocalFileSystem()
    for name in ("dt=2026-11-02", "dt=2026-11-01"):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "part.jsonl").write_text("{}\n")
    (tmp_path / "in" / "dt=2026-11-03").mkdir()  # empty: not yet a partition
    (tmp_path / "in" / "_tmp").mkdir()
    (tmp_path / "in" / "_tmp" / "x.jsonl").write_text("{}\n")
    assert list_partitions(fs, str(tmp_path / "in"), "in") == ["dt=2026-11-01", "dt=2026-11-02"]
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "part.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="holds files but no partition folders"):
        list_partitions(fs, str(tmp_path / "flat"), "flat")
    assert list_partitions(fs, str(tmp_path / "missing"), "missing") == []


def test_retrain_config_is_checked():
    raw = {"task": task_dict(), "teacher": {"model": "m"}, "data": {"input": "i", "output": "o"},
           "student": {"model": "s"}, "distill": {"output": "d", "validation": "v.jsonl"},
           "retrain": {"root": "r", "input": "i"}}
    with pytest.raises(ConfigError, match=r"distill.test: retraining compares candidate and production"):
        config_from_dict(raw)
    raw["retrain"]["gate_set"] = "validation"
    assert config_from_dict(raw).retrain.gate_set == "validation"
    raw["retrain"]["guard"] = "recall"
    with pytest.raises(ConfigError, match="retrain.guard: must be one of class_recall, none"):
        config_from_dict(raw)
    raw["retrain"] = {"root": "r", "input": "i", "gate_set": "validation", "window": 0}
    with pytest.raises(ConfigError, match="retrain.window: must be >= 1"):
        config_from_dict(raw)


def test_the_scheduling_examples_submit_the_retrain_job():
    """deploy/: the cron line and the Kubernetes CronJob each run `raydistill submit retrain CONFIG`, which
    the submit command accepts as written, and never two at once."""
    cron = [line for line in (ROOT / "deploy/retrain.cron").read_text().splitlines()
            if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(cron) == 1
    words = shlex.split(cron[0])
    assert words[:5] == ["30", "2", "*", "*", "*"] and "flock" in words
    command = words[words.index(".venv/bin/raydistill") + 1:words.index(">>")]
    assert command[0] == "submit" and submit_parser().parse_args(command[1:]).job == "retrain"

    cronjob = yaml.safe_load((ROOT / "deploy/retrain-cronjob.yaml").read_text())
    assert cronjob["kind"] == "CronJob" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["raydistill", "submit"]
    args = submit_parser().parse_args(container["command"][2:])
    assert args.job == "retrain" and args.address.endswith(":8265")
    example = config_from_dict(yaml.safe_load((ROOT / "examples/banking_support.yaml").read_text()))
    assert example.retrain is not None and storage.is_s3(example.retrain.root)


def test_classification_agreement_leaves_abstentions_out():
    predictions = {"label": ["positive", "negative", "neutral", "neutral"]}
    assert kind().agreement(["positive", "neutral", None, "neutral"], predictions).tolist() == [True, False, True]
    assert kind().class_recalls(report(0.5, {"negative": 0.25, "neutral": 1.0, "positive": 0.5})) == {
        "negative": 0.25, "neutral": 1.0, "positive": 0.5}


def test_a_tick_while_the_last_run_still_holds_the_root_says_so(tmp_path, capsys):
    """Two runs never work on one root: the second is refused with a one-line error naming the holder."""
    from pipeline.cli import main

    (tmp_path / "corpus" / "dt=2026-11-01").mkdir(parents=True)
    (tmp_path / "corpus" / "dt=2026-11-01" / "part.jsonl").write_text('{"id": "a", "text": "t"}\n')
    raw = {"task": task_dict(), "teacher": {"model": "m"}, "data": {"input": "i", "output": "o"},
           "student": {"model": "s"}, "distill": {"output": "d", "test": "t.jsonl"},
           "retrain": {"root": str(tmp_path / "root"), "input": str(tmp_path / "corpus")}}
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(raw))
    held = storage.OutputLease(pafs.LocalFileSystem(), str(tmp_path / "root"), "elsewhere", "retrain.root",
                               "retraining job")
    with held:
        assert main(["retrain", str(tmp_path / "retrain.yaml")]) == 1
    assert "is in use by a running retraining job" in capsys.readouterr().err and not (tmp_path / "root" / "state.json").exists()
