"""`raydistill submit`: the README's submit line against a real local head, and what it resolves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, config_from_dict, relative_paths, with_absolute_paths
from pipeline.entrypoints import entrypoint, parse_entrypoint
from pipeline.jobs_api import PROJECT_ROOT
from pipeline.submit import CONFIG_NAME, SMOKE_ROOT_ENV, refuse_relative_paths, smoke_root, stage
from tests.conftest import VENV_BIN, task_dict

IN_A_JOB = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})


def a_config(tmp_path: Path, **data) -> dict:
    model = tmp_path / "models" / "teacher"
    model.mkdir(parents=True, exist_ok=True)
    return {"task": task_dict(), "teacher": {"model": "models/teacher"},
            "data": {"input": "corpus.jsonl", "output": "runs/labels", **data},
            "distill": {"output": "s3://bucket/student", "extra_labels": ["more/labels", "/abs/labels"],
                        "validation": "gold/validation.jsonl"}}


def test_relative_paths_are_made_absolute_against_the_submitters_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_dict(a_config(tmp_path))
    assert dict(relative_paths(config)) == {
        "data.input": "corpus.jsonl", "data.output": "runs/labels", "distill.extra_labels": "more/labels",
        "distill.validation": "gold/validation.jsonl", "teacher.model": "models/teacher"}
    resolved = with_absolute_paths(config, tmp_path)
    assert relative_paths(resolved) == []
    assert resolved.data.output == str(tmp_path / "runs" / "labels")
    assert resolved.distill.extra_labels == [str(tmp_path / "more" / "labels"), "/abs/labels"]
    assert resolved.distill.output == "s3://bucket/student"  # S3 stays as it is
    assert resolved.teacher.model == str(tmp_path / "models" / "teacher")
    hub = config_from_dict({**a_config(tmp_path), "teacher": {"model": "Qwen/Qwen2.5-1.5B-Instruct"}})
    assert with_absolute_paths(hub, tmp_path).teacher.model == "Qwen/Qwen2.5-1.5B-Instruct"  # a hub name


def test_inside_a_submitted_job_a_relative_path_is_refused_naming_its_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_dict(a_config(tmp_path))
    refuse_relative_paths(config)  # outside a job: relative paths read from the current directory
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", IN_A_JOB)
    with pytest.raises(ConfigError, match="data.input: the relative path 'corpus.jsonl' would resolve inside"):
        refuse_relative_paths(config)
    refuse_relative_paths(with_absolute_paths(config, tmp_path))
    monkeypatch.delenv(SMOKE_ROOT_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"--smoke: .* set {SMOKE_ROOT_ENV}"):
        smoke_root()
    monkeypatch.setenv(SMOKE_ROOT_ENV, str(tmp_path / "smoke"))
    assert smoke_root() == tmp_path / "smoke"


def test_entrypoints_round_trip_and_the_staged_working_dir_holds_the_library_and_the_config(tmp_path):
    command = entrypoint("label.py", ["s3://b/run 1/config.yaml", "--set", "a.b=it's"])
    assert command.startswith("sh ray_jobs/run.sh label.py ")
    assert parse_entrypoint(command) == ("label.py", ["s3://b/run 1/config.yaml", "--set", "a.b=it's"])
    assert parse_entrypoint("python ray_jobs/distill.py c.yaml") == ("distill.py", ["c.yaml"])
    folder = stage(tmp_path / "stage", with_absolute_paths(config_from_dict(a_config(tmp_path)), tmp_path))
    assert (folder / "pipeline" / "cli.py").is_file() and (folder / "ray_jobs" / "run.sh").is_file()
    assert not list(folder.rglob("__pycache__"))
    assert str(tmp_path / "corpus.jsonl") in (folder / CONFIG_NAME).read_text()


@pytest.mark.slow
def test_the_readme_submit_line_labels_into_the_folder_the_config_names(ray_head, tmp_path):
    """`.venv/bin/raydistill submit label examples/banking_support.yaml --smoke` as the README has it, run from a
    directory holding the example (its data cut to 48 rows, for time), against a head started the README's
    way. The head's bare `python` is not the project's and ~/.ray/auth_token is not announced by
    RAY_AUTH_MODE: the three failures of issue 16. The labels must land under that directory."""
    work = tmp_path / "user"
    shutil.copytree(PROJECT_ROOT / "examples", work / "examples")
    train = work / "examples" / "data" / "banking_support" / "train.jsonl"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:48]))
    env = {**os.environ, "RAY_ADDRESS": ray_head}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != VENV_BIN)
    for key in ("VIRTUAL_ENV", "RAY_AUTH_MODE", "RAYDISTILL_PYTHON"):
        env.pop(key, None)
    result = subprocess.run([str(VENV_BIN / "raydistill"), "submit", "label", "examples/banking_support.yaml",
                             "--smoke"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "submitted label job raydistill-label-" in out and "ray job logs --follow" in out
    assert "SUCCEEDED" in out

    labels = work / "runs" / "smoke" / "banking_support" / "labels"
    table = pq.read_table(labels / "data")
    wanted = sorted(json.loads(line)["id"] for line in train.read_text().splitlines())
    assert sorted(table.column("id").to_pylist()) == wanted
    report = json.loads((labels / "report.json").read_text())
    assert report["rows"]["input"] == 48 and report["smoke"] is True


def test_a_scheduled_retrain_submitted_with_nothing_new_succeeds_and_says_so(ray_head, tmp_path):
    """The scheduling examples' command (`raydistill submit retrain CONFIG`) through the real Jobs API: a tick
    that finds no new partition is a job that succeeds, writes nothing and says why."""
    import yaml

    (tmp_path / "corpus").mkdir()
    raw = {"task": task_dict(), "teacher": {"model": "unused-teacher"},
           "data": {"input": "unused", "output": "unused"}, "student": {"model": "unused-student"},
           "distill": {"output": "unused", "test": "gold/test.jsonl"},
           "retrain": {"root": "retrain", "input": "corpus"}}
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAY_ADDRESS": ray_head}
    result = subprocess.run([str(VENV_BIN / "raydistill"), "submit", "retrain", "retrain.yaml"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "submitted retrain job raydistill-retrain-" in out and "SUCCEEDED" in out
    assert "no new partition under the input (0 partition(s)" in out and "retrain: nothing to do" in out
    assert not (tmp_path / "retrain").exists()
