"""Error-extrapolation rounds: every step a Ray job submitted to a local Ray head, data in S3 (moto).

The head is started by the test (`ray start --head`) with its own dashboard,
so the Jobs API is the real one; the jobs run the real vLLM engine (tiny
random teacher) and Ray Train (tiny random BERT).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest
import yaml

from pipeline import storage
from pipeline.config import (
    ConfigError, DistillConfig, RoundsConfig, StorageConfig, StudentConfig, config_from_dict, to_dict,
)
from pipeline.evaluate import GoldSetError
from pipeline.cli import main
from pipeline.jobs_api import job_client
from pipeline.local_jobs import LocalJobs
from pipeline.rounds import EXIT_AFTER_ENV, StepFailed, metrics_png, run_rounds, summary_table
from tests.conftest import LABELS, task_dict
from tests.test_distill import labelled_rows, tiny_student, write_gold, write_labelled  # noqa: F401



def _s3(endpoint: str, bucket: str):
    return storage.resolve(f"s3://{bucket}", StorageConfig(endpoint_url=endpoint))[0]


@pytest.fixture
def rounds_config(tmp_path, make_config, tiny_student, s3_endpoint, s3_bucket, ray_head):  # noqa: F811
    """Round-0 labels, gold validation/test sets and the rounds output, all in S3."""
    return _rounds_setup(tmp_path, make_config, tiny_student, ray_head, _s3(s3_endpoint, s3_bucket), s3_bucket,
                         "s3://", {"endpoint_url": s3_endpoint})


@pytest.fixture
def local_rounds_config(tmp_path, make_config, tiny_student):  # noqa: F811
    """The same on local disk, every step in the orchestrator's own process (``rounds.address: local``):
    the strategy tests spend their time on the strategies, not on job processes and moto (the Jobs API
    and S3 are the extrapolation and failing-step tests')."""
    root = tmp_path / "store"
    root.mkdir()
    return _rounds_setup(tmp_path, make_config, tiny_student, "local", pafs.LocalFileSystem(), str(root), "", {})


def _rounds_setup(tmp_path, make_config, student, head, fs, root: str, scheme: str, storage_settings: dict):
    def upload(local: Path, key: str) -> str:
        if not local.is_dir():
            fs.create_dir(f"{root}/{key}".rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(local), f"{root}/{key}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        return f"{scheme}{root}/{key}"

    labels_uri = upload(write_labelled(tmp_path / "labels", labelled_rows(120)), "labels")
    validation = upload(write_gold(tmp_path / "validation.jsonl", 30, seed=2), "gold/validation.jsonl")
    test = upload(write_gold(tmp_path / "test.jsonl", 30, seed=3), "gold/test.jsonl")

    def make(**rounds):
        config = make_config(labels_uri, labels_uri, storage=storage_settings,
                             teacher={"max_tokens": 48, "samples": 1})
        distill = DistillConfig(output="unused", labels=labels_uri, validation=validation, test=test, epochs=1,
                                batch_size=16, learning_rate=1e-3,
                                num_workers=1)  # DDP itself is tested in test_distill; one worker process less per job
        settings = {"output": f"{scheme}{root}/rounds", "address": head, "rounds": 2, "patience": 5,
                    "examples_per_error": 2, "max_errors": 6, "min_chars": 4, "poll_seconds": 0.5, **rounds}
        return dataclasses.replace(config, student=StudentConfig(model=str(student), max_length=24),
                                   distill=distill, rounds=RoundsConfig(**settings))

    make.fs, make.bucket, make.upload = fs, root, upload
    make.uri = lambda key: f"{scheme}{root}/{key}"
    return make


def _run_cli(config, tmp_path, env_extra=None) -> subprocess.CompletedProcess:
    path = tmp_path / "rounds.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "rounds", str(path)], env=env,
                          capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_a_round_survives_kills_after_synthesis_and_while_a_job_runs(rounds_config, tmp_path):
    """One round of error extrapolation on S3, the orchestrator killed twice on the way.

    One round, not two (CI time): each round runs the same steps, and how a later round's
    training data gathers every round's additions is checked without jobs in test_round_steps.
    """
    config = rounds_config(rounds=1)
    fs, bucket = rounds_config.fs, rounds_config.bucket
    killed = _run_cli(config, tmp_path, {EXIT_AFTER_ENV: "1/synthesize"})
    assert killed.returncode == 75, killed.stdout[-3000:] + killed.stderr[-3000:]
    manifest = storage.read_json(fs, f"{bucket}/rounds/manifest.json")
    assert manifest["status"] == "running"
    assert manifest["steps"]["1/synthesize"]["status"] == "succeeded"
    assert "1/filter" not in manifest["steps"]
    candidates_before = storage.read_parquet(fs, f"{bucket}/rounds/rounds/1/extra/candidates.parquet")

    # Killed again while round 1's filter job runs: the restart must wait for that job, not submit another.
    killed = _run_cli(config, tmp_path, {EXIT_AFTER_ENV: "1/filter:submitted"})
    assert killed.returncode == 75, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "round 1 synthesize: done earlier" in killed.stdout
    manifest = storage.read_json(fs, f"{bucket}/rounds/manifest.json")
    assert manifest["steps"]["1/filter"]["status"] == "submitted"

    finished = _run_cli(config, tmp_path)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "round 1 filter: found its job" in finished.stdout

    manifest = storage.read_json(fs, f"{bucket}/rounds/manifest.json")
    assert manifest["status"] == "finished"
    # One job per step, each submitted once: the restarts reused round 0's training and round 1's synthesis.
    expected_steps = {"0/train", "1/synthesize", "1/filter", "1/train"}
    if manifest["stop_reason"] == "round 1's filtered synthesis added no examples":  # noise can do that
        expected_steps.remove("1/train")
    assert set(manifest["steps"]) == expected_steps
    assert all(step["attempt"] == 0 and step["status"] == "succeeded" for step in manifest["steps"].values())
    jobs = [j for j in job_client(config.rounds.address).list_jobs()
            if (j.metadata or {}).get("raydistill_run") == manifest["run_id"]]
    assert sorted(j.submission_id for j in jobs) == sorted(s["submission_id"] for s in manifest["steps"].values())
    # The killed run's candidates were not regenerated.
    after = storage.read_parquet(fs, f"{bucket}/rounds/rounds/1/extra/candidates.parquet")
    assert after.equals(candidates_before)

    # Row counts: each round trains on round 0 plus every filtered extra so far, no row twice.
    base_rows = 120  # labelled_rows: 70% unanimous rows pass the cls filter (consistency 1.0)
    base_kept = sum(1 for row in labelled_rows(120) if row["consistency"] == 1.0)
    report = storage.read_json(fs, f"{bucket}/rounds/rounds/1/extra/report.json")
    synthesis = storage.read_json(fs, f"{bucket}/rounds/rounds/1/extra/synthesis.json")
    assert report["candidates"] == synthesis["candidates"] == report["kept"] + sum(report["dropped"].values())
    errors = storage.read_parquet(fs, f"{bucket}/rounds/rounds/1/errors.parquet")
    assert errors.num_rows == synthesis["errors"] <= 6
    assert pc.all(pc.not_equal(errors.column("label"), errors.column("predicted"))).as_py()
    if report["kept"]:
        extra = storage.read_parquet(fs, f"{bucket}/rounds/rounds/1/extra/data")
        assert extra.num_rows == report["kept"] == manifest["rounds"]["1"]["added"]
        assert set(extra.column("hard_label").to_pylist()) <= set(LABELS)
    added = 0
    for r in sorted(manifest["rounds"], key=int):
        info = manifest["rounds"][r]
        added += info["added"]
        if info["trained"]:
            assert info["train_rows"] == base_kept + added, (r, info)
            assert set(info["evaluation"]) == {"validation", "test"}
            student = storage.read_json(fs, f"{bucket}/rounds/rounds/{r}/student/report.json")
            assert student["rows"]["labelled"] == base_rows + added
    best = manifest["best"]
    assert best["score"] == max(i["evaluation"]["validation"]["accuracy"]
                                for i in manifest["rounds"].values() if i["trained"])
    for name in ("summary.md", "metrics.png", "model/config.json", "model/raydistill.json", "config.yaml"):
        assert storage.exists(fs, f"{bucket}/rounds/{name}"), name
    summary = fs.open_input_stream(f"{bucket}/rounds/summary.md").read().decode()
    assert len([line for line in summary.splitlines() if line.startswith("| ") and line[2].isdigit()]) == len(
        manifest["rounds"])


@pytest.mark.slow
def test_a_promptmix_round_relabels_with_the_labelling_job_and_trains_on_its_labels(local_rounds_config, ray_cluster):
    """Every step run in this process on the session's Ray cluster."""
    rounds_config = local_rounds_config
    fs, bucket = rounds_config.fs, rounds_config.bucket
    # Without the comparison arm (a student on the intended labels): one Ray Train job less, a minute of CI.
    # That arm is the same training job on other data; test_round_steps checks which data it gets.
    config = rounds_config(output=rounds_config.uri("promptmix"), strategy="promptmix", rounds=1, mix_per_class=4,
                           mix_per_request=2, compare_without_relabelling=False)
    lines: list[str] = []
    state = run_rounds(config, log=lines.append, client=LocalJobs(main))

    assert state["status"] == "finished" and state["stop_reason"] == "ran all 1 rounds", state.get("stop_reason")
    assert set(state["steps"]) == {"0/train", "1/mix", "1/filter", "1/relabel", "1/train"}
    assert all(step["status"] == "succeeded" for step in state["steps"].values())
    root = f"{bucket}/promptmix/rounds/1"
    mix = storage.read_json(fs, f"{root}/extra/synthesis.json")
    assert mix["requests"] == 3 * 2 and sum(mix["asked_per_pair"].values()) == 3 * 4
    assert all(label != partner for pair in mix["asked_per_pair"] for label, partner in [pair.split("+")])
    candidates = storage.read_parquet(fs, f"{root}/extra/candidates.parquet").to_pylist()
    assert all(row["source"].split()[2] == row["label"] for row in candidates)  # "mix 0.63 <label> + ..."
    kept = storage.read_json(fs, f"{root}/extra/report.json")["kept"]
    assert kept > 0

    # The labelling job ran on exactly the filtered examples; its labels replace the intended ones.
    intended = storage.read_parquet(fs, f"{root}/extra/data")
    relabelled = storage.read_parquet(fs, f"{root}/relabelled/data")
    assert set(relabelled.column("id").to_pylist()) <= set(intended.column("id").to_pylist())
    assert all(len(votes) == 1 for votes in relabelled.column("votes").to_pylist())  # teacher.samples
    stats = storage.read_json(fs, f"{root}/relabel.json")
    assert stats["examples"] == kept == intended.num_rows
    assert stats["labelled"] == relabelled.num_rows == stats["examples"] - stats["quarantined"]
    assert stats["relabelled"] + stats["unchanged"] + stats["abstained"] == stats["labelled"]
    changed = sum(a != b for a, b in zip(
        [dict(zip(intended.column("id").to_pylist(), intended.column("hard_label").to_pylist()))[i]
         for i in relabelled.column("id").to_pylist()], relabelled.column("hard_label").to_pylist())
        if b is not None)
    assert stats["relabelled"] == changed
    assert any(f"relabel: {stats['relabelled']} of {kept} examples got another label" in line for line in lines)

    # The student trains on round 0's rows plus this round's examples, with the labelling job's labels.
    base_rows = 120
    with_relabel = storage.read_json(fs, f"{root}/student/report.json")
    assert with_relabel["rows"]["labelled"] == base_rows + relabelled.num_rows
    assert not storage.exists(fs, f"{root}/student-intended/report.json")
    info = state["rounds"]["1"]
    assert info["relabel"] == stats and "without_relabelling" not in info
    assert info["evaluation"] == with_relabel["evaluation"]
    summary = fs.open_input_stream(f"{bucket}/promptmix/summary.md").read().decode()
    assert "PromptMix relabelling" in summary
    assert f"| 1 | {kept} | {stats['relabelled']} | {stats['unchanged']} |" in summary


@pytest.mark.slow
def test_a_failing_step_is_reported_with_its_log_and_the_manifest_stays_readable(rounds_config, tmp_path):
    config = rounds_config(step_retries=0)  # submitting it again is checked without jobs, below
    broken = dataclasses.replace(config, student=dataclasses.replace(config.student, model=str(tmp_path / "none")))
    with pytest.raises(Exception) as failure:
        run_rounds(broken, log=lambda _: None)
    message = str(failure.value)
    assert "round 0 step 'train' failed" in message and "FAILED" in message
    assert "last 40 log lines" in message and str(tmp_path / "none") in message
    fs, bucket = rounds_config.fs, rounds_config.bucket
    manifest = storage.read_json(fs, f"{bucket}/rounds/manifest.json")
    assert manifest["status"] == "failed"
    assert manifest["steps"]["0/train"]["status"] == "failed"
    assert manifest["steps"]["0/train"]["log_tail"]


def test_bad_gold_sets_fail_before_any_job(tmp_path, make_config, tiny_student):  # noqa: F811
    labels = write_labelled(tmp_path / "labels", labelled_rows(12))

    class NoJobs:
        def submit_job(self, **_):
            raise AssertionError("a job was submitted")

    def config(validation):
        base = make_config(str(labels), str(labels))
        return dataclasses.replace(
            base, student=StudentConfig(model=str(tiny_student)),
            distill=DistillConfig(output=str(tmp_path / "s"), validation=validation),
            rounds=RoundsConfig(output=str(tmp_path / "rounds")),
        )

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"id": "v1", "text": "fine", "label": "great"}) + "\n")
    cases = [
        (str(tmp_path / "missing.jsonl"), "distill.validation: no jsonl or parquet files at"),
        (str(empty), "is empty"),
        (str(unknown), "row 1 (id 'v1') has label 'great', not one of the config's labels"),
    ]
    for validation, message in cases:
        with pytest.raises(GoldSetError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_rounds(config(validation), log=lambda _: None, client=NoJobs())
    assert not (tmp_path / "rounds").exists()
    raw = to_dict(config(str(unknown)))
    raw["distill"]["validation"] = None
    with pytest.raises(ConfigError, match="distill.validation: rounds need a gold validation set"):
        config_from_dict(raw)


def test_summary_tables_show_each_strategy_s_extra_columns():
    evaluation = {name: {"accuracy": acc, "macro_f1": acc / 2} for name, acc in (("validation", 0.5), ("test", 0.25))}
    state = {"best": {"round": 1}, "steps": {"0/train": {"seconds": 10}, "1/train": {"seconds": 5}}, "rounds": {
        "0": {"added": 0, "trained": True, "train_rows": 10, "evaluation": evaluation, "freeal": {
            "labels_changed": 0, "clean": 6, "noisy": 4, "pseudo_labelled": 1, "to_relabel": 4,
            "teacher_accuracy": {"accuracy": 0.7, "clean_accuracy": 0.9}, "warmup_evaluation": evaluation}},
        "1": {"added": 3, "trained": True, "train_rows": 12, "evaluation": evaluation, "relabel": {
            "examples": 5, "relabelled": 2, "unchanged": 2, "abstained": 1, "quarantined": 0},
              "without_relabelling": {"evaluation": evaluation}},
    }}
    table = summary_table(state, "accuracy")
    assert "| 0 | 0 | 10 | 0.5000 | 0.2500 | 0.2500 | 0.1250 | 10 |" in table
    assert "| 1 (best) | 3 | 12 |" in table
    assert "| 1 | 5 | 2 | 2 | 1 | 0 | 0.2500 | 0.2500 |" in table  # PromptMix relabelling
    assert "| 0 | 0 | 6 | 4 | 1 | 4 | 0.7000 | 0.9000 | 0.2500 | 0.2500 |" in table  # FreeAL
    assert metrics_png(state, "accuracy").startswith(b"\x89PNG")


class FlakyJobs:
    """A Jobs API whose answers are scripted: each job's statuses in turn, errors where asked.

    Only for the orchestrator's decisions about the API's answers; the real API runs in the tests above.
    """

    def __init__(self, script: dict[str, list], submit_errors: list | None = None):
        self.script, self.submitted, self.stopped = script, [], []
        self.submit_errors = submit_errors or []  # raised by the first submits, in turn

    def submit_job(self, *, submission_id, **_):
        if submission_id in self.submitted:
            raise RuntimeError(f"Request failed with status code 400: Job {submission_id} already exists.")
        error = self.submit_errors.pop(0) if self.submit_errors else None
        if error is not None and "lost answer" not in str(error):
            raise error
        self.submitted.append(submission_id)
        if error is not None:  # it went through, but the answer never came back
            raise error

    def get_job_status(self, submission_id):
        answers = self.script[submission_id[-2:]]  # by attempt: "a0", "a1", ...
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return type("Status", (), {"value": answer})()

    def stop_job(self, submission_id):
        self.stopped.append(submission_id)

    def get_job_logs(self, submission_id):
        return f"log of {submission_id}\n"

    async def tail_job_logs(self, submission_id):
        yield f"[distill] progress of {submission_id}\nlast line"


def _runner(tmp_path, client, **rounds):
    from pipeline.rounds_layout import RoundsLayout
    from pipeline.rounds import Manifest, _Runner

    config = config_from_dict({
        "task": task_dict(),
        "teacher": {"model": "m"}, "data": {"input": "in", "output": "out"},
        "student": {"model": "s"}, "distill": {"output": "d", "validation": "v"},
        "rounds": {"output": str(tmp_path / "rounds"), "poll_seconds": 0.01, **rounds},
    })
    layout = RoundsLayout.of(config)
    lines: list[str] = []
    return _Runner(config, layout, Manifest.open(layout, config), client, lines.append), lines


def test_jobs_api_errors_are_waited_out_and_only_a_missing_job_counts_as_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda _: None)
    unavailable = RuntimeError("Request failed with status code 503: dashboard restarting.")
    refused = ConnectionError("Connection refused")
    client = FlakyJobs({"a0": [unavailable, refused, "RUNNING", unavailable, "SUCCEEDED"]})
    runner, lines = _runner(tmp_path, client)
    runner.step(0, "train", "python ray_jobs/distill.py")
    assert len(client.submitted) == 1 and runner.manifest.step(0, "train")["status"] == "succeeded"
    assert sum("the Jobs API failed" in line for line in lines) == 3
    assert any("| [distill] progress of" in line for line in lines)  # the followed log's progress lines

    # An orchestrator started again finds its job missing (the cluster was replaced): the next attempt.
    runner.manifest.set_step(0, "label", {"status": "submitted", "submission_id": "x-r0-label-a0", "attempt": 0,
                                         "entrypoint": "python ray_jobs/label.py", "submitted_at": time.time()})
    client.script.update({"a0": [RuntimeError("Request failed with status code 404: Job x does not exist.")],
                          "a1": ["SUCCEEDED"]})
    runner.step(0, "label", "python ray_jobs/label.py")
    assert client.submitted[-1].endswith("-r0-label-a1") and runner.manifest.step(0, "label")["attempt"] == 1


def test_a_submit_the_api_fails_is_tried_again_and_a_lost_answer_never_makes_a_second_job(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda _: None)
    client = FlakyJobs({"a0": ["SUCCEEDED"]}, submit_errors=[
        RuntimeError("Request failed with status code 502: Bad Gateway"),
        ConnectionError("Connection reset by peer (a lost answer)"),  # the job was created all the same
    ])
    runner, lines = _runner(tmp_path, client)
    runner.step(0, "train", "python ray_jobs/distill.py")
    assert len(client.submitted) == 1 and runner.manifest.step(0, "train")["status"] == "succeeded"
    assert sum("the Jobs API failed asking to submit" in line for line in lines) == 2

    # A request the API refuses (a client error) is not asked again for ten minutes: it fails at once.
    client = FlakyJobs({"a0": ["SUCCEEDED"]}, submit_errors=[
        RuntimeError("Request failed with status code 400: runtime_env working_dir is too large")])
    runner, _ = _runner(tmp_path / "refused", client)
    with pytest.raises(RuntimeError, match="working_dir is too large"):
        runner.step(0, "train", "python ray_jobs/distill.py")


def test_a_failed_step_is_submitted_again_then_fails_the_run_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda _: None)
    client = FlakyJobs({"a0": ["FAILED"], "a1": ["FAILED"], "a2": ["SUCCEEDED"]})
    runner, lines = _runner(tmp_path, client, step_retries=2)
    runner.step(0, "train", "python ray_jobs/distill.py")
    assert [s[-2:] for s in client.submitted] == ["a0", "a1", "a2"]
    assert runner.manifest.step(0, "train")["status"] == "succeeded"

    client = FlakyJobs({"a0": ["FAILED"], "a1": ["FAILED"]})
    runner, lines = _runner(tmp_path / "again", client, step_retries=1)
    with pytest.raises(StepFailed, match=r"(?s)ended FAILED \(attempt 2 of 2\).*last line"):
        runner.step(0, "train", "python ray_jobs/distill.py")
    assert len(client.submitted) == 2 and runner.manifest.step(0, "train")["status"] == "failed"

    # A job still running when its step must be submitted again is stopped first.
    client = FlakyJobs({"a0": ["RUNNING", "STOPPED"], "a1": ["SUCCEEDED"]})
    runner, _ = _runner(tmp_path / "third", client)
    runner.manifest.set_step(0, "train", {"status": "failed", "submission_id": "x-r0-train-a0", "attempt": 0,
                                         "entrypoint": "e", "submitted_at": time.time()})
    runner.step(0, "train", "e")
    assert client.stopped == ["x-r0-train-a0"] and client.submitted[-1].endswith("a1")


def test_overrides_for_the_jobs_keep_odd_paths_whole():
    from pipeline.config import apply_override
    from pipeline.strategies.base import override as _override, relabel_overrides as _relabel_overrides

    odd = "s3://bucket/run: 1 #2/[x], 'y' \"z\""
    raw: dict = {}
    for override in [*_relabel_overrides(odd + "/in", odd + "/out"), _override("distill.extra_labels", [odd, "b"])]:
        apply_override(raw, override)
    assert raw["data"] == {"input": odd + "/in", "format": "parquet", "id_column": "id", "text_column": "text",
                           "output": odd + "/out"}
    assert raw["distill"]["extra_labels"] == [odd, "b"]


def test_local_jobs_run_a_step_in_this_process_and_answer_as_the_jobs_api_would(tmp_path):
    jobs = LocalJobs(main)
    missing = tmp_path / "missing.yaml"
    jobs.submit_job(entrypoint=f"python ray_jobs/distill.py {missing} --set distill.epochs=1", submission_id="j-a0",
                    runtime_env={"env_vars": {"RAYDISTILL_TEST_VAR": "1"}}, metadata={"step": "train"})
    assert jobs.get_job_status("j-a0").value == "FAILED"
    assert str(missing) in jobs.get_job_logs("j-a0")  # the command's own error, as a job's log holds it
    assert "RAYDISTILL_TEST_VAR" not in os.environ  # the step's environment is the step's only
    assert [(j.submission_id, j.metadata) for j in jobs.list_jobs()] == [("j-a0", {"step": "train"})]
    with pytest.raises(RuntimeError, match="already exists"):
        jobs.submit_job(entrypoint="python ray_jobs/distill.py x", submission_id="j-a0")
    with pytest.raises(RuntimeError, match="status code 404"):  # what a restarted orchestrator meets
        LocalJobs(main).get_job_status("j-a0")
    with pytest.raises(ValueError, match="ray_jobs/"):
        jobs.submit_job(entrypoint="bash -c 'rm -rf /'", submission_id="j-b0")
