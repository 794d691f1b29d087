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
from pipeline.config import ConfigError, Demo, DistillConfig, config_from_dict, RoundsConfig, StorageConfig, StudentConfig, to_dict
from pipeline.evaluate import GoldSetError
from pipeline.prompts import prompt_hash
from pipeline.rounds import EXIT_AFTER_ENV, job_client, metrics_png, run_rounds, summary_table
from tests.conftest import LABELS, _free_port
from tests.test_distill import labelled_rows, tiny_student, write_gold, write_labelled  # noqa: F401

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head with the Jobs API, as `ray start --head` gives on a cluster. Yields its address."""
    temp = tmp_path_factory.mktemp("ray-head")
    port, dashboard = _free_port(), _free_port()
    # Every port of its own, so it can run beside other Ray instances on the machine.
    ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port", "ray-client-server-port")]
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        started = subprocess.run(
            ["ray", "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}",
             "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp}",
             "--disable-usage-stats", *ports],
            env=env, capture_output=True, text=True,
        )
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        # Stop only this head's processes: `ray stop` would also stop other Ray instances.
        for signal in ("-TERM", "-KILL"):  # Ray's processes may ignore SIGTERM while shutting down
            subprocess.run(["pkill", signal, "-f", "--", str(temp)], check=False)
            subprocess.run(["pkill", signal, "-f", "--", f"gcs-address=[0-9.]*:{port}"], check=False)
            time.sleep(3)


def _s3(endpoint: str, bucket: str):
    return storage.resolve(f"s3://{bucket}", StorageConfig(endpoint_url=endpoint))[0]


@pytest.fixture
def rounds_config(tmp_path, make_config, tiny_student, s3_endpoint, s3_bucket, ray_head):  # noqa: F811
    """Round-0 labels, gold validation/test sets and the rounds output, all in S3."""
    return _rounds_setup(tmp_path, make_config, tiny_student, ray_head, _s3(s3_endpoint, s3_bucket), s3_bucket,
                         "s3://", {"endpoint_url": s3_endpoint})


@pytest.fixture
def local_rounds_config(tmp_path, make_config, tiny_student, ray_head):  # noqa: F811
    """The same on local disk, which the jobs of this machine's Ray head share: the strategy tests spend
    their time on the strategies, not on moto (S3 is the extrapolation and failing-step tests' storage)."""
    root = tmp_path / "store"
    root.mkdir()
    return _rounds_setup(tmp_path, make_config, tiny_student, ray_head, pafs.LocalFileSystem(), str(root), "", {})


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
def test_a_promptmix_round_relabels_with_the_labelling_job_and_trains_both_ways(local_rounds_config):
    rounds_config = local_rounds_config
    fs, bucket = rounds_config.fs, rounds_config.bucket
    config = rounds_config(output=rounds_config.uri("promptmix"), strategy="promptmix", rounds=1, mix_per_class=4,
                           mix_per_request=2)
    lines: list[str] = []
    state = run_rounds(config, log=lines.append)

    assert state["status"] == "finished" and state["stop_reason"] == "ran all 1 rounds", state.get("stop_reason")
    assert set(state["steps"]) == {"0/train", "1/mix", "1/filter", "1/relabel", "1/train-intended", "1/train"}
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

    # Both students train on round 0's rows plus this round's examples, with different labels.
    base_rows = 120
    with_relabel = storage.read_json(fs, f"{root}/student/report.json")
    without = storage.read_json(fs, f"{root}/student-intended/report.json")
    assert with_relabel["rows"]["labelled"] == base_rows + relabelled.num_rows
    assert without["rows"]["labelled"] == base_rows + intended.num_rows
    info = state["rounds"]["1"]
    assert info["relabel"] == stats
    assert info["without_relabelling"]["evaluation"] == without["evaluation"]
    assert info["evaluation"] == with_relabel["evaluation"]
    summary = fs.open_input_stream(f"{bucket}/promptmix/summary.md").read().decode()
    assert "PromptMix relabelling" in summary
    assert f"| 1 | {kept} | {stats['relabelled']} | {stats['unchanged']} |" in summary


@pytest.mark.slow
def test_a_freeal_round_labels_selects_relabels_and_merges(local_rounds_config, tmp_path):
    rounds_config = local_rounds_config
    fs, bucket = rounds_config.fs, rounds_config.bucket
    texts = [row["text"] for row in labelled_rows(60)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"text": t, "label": LABELS[i % 3]}) + "\n" for i, t in enumerate(texts)))
    config = rounds_config(output=rounds_config.uri("freeal"), strategy="freeal", rounds=1, freeal_split="fraction",
                           freeal_neighbours=2, freeal_demos_per_class=2, freeal_pseudo_confidence=0.34,
                           freeal_gold=rounds_config.upload(gold, "freeal-gold/gold.jsonl"))
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, input=rounds_config.upload(corpus, "freeal-corpus/corpus.jsonl"), output="unused"))
    # Stopped right after round 1's merge: round 1's student steps are round 0's again (CI time).
    stopped = _run_cli(config, tmp_path, {EXIT_AFTER_ENV: "1/merge"})
    assert stopped.returncode == 75, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    state = storage.read_json(fs, f"{bucket}/freeal/manifest.json")
    assert set(state["steps"]) == {"0/demos", "0/label", "0/warmup", "0/select", "0/train", "1/relabel", "1/merge"}
    assert all(step["status"] == "succeeded" for step in state["steps"].values())
    root = f"{bucket}/freeal/rounds"
    demos = storage.read_json(fs, f"{root}/0/demos.json")
    assert all(d["label"] in LABELS for d in demos["demos"])
    assert sum(demos["per_label"].values()) == len(demos["demos"]) <= 3 * 2
    # Round 0: the labelling job labelled the whole corpus with the teacher's own demos.
    labels0 = storage.read_parquet(fs, f"{root}/0/labels/data")
    assert sorted(labels0.column("id").to_pylist()) == sorted(f"c{i}" for i in range(60))
    manifest0 = storage.read_json(fs, f"{root}/0/labels/manifest.json")
    assert manifest0["prompt_hash"] == prompt_hash(dataclasses.replace(
        config.task, demos=[Demo(d["text"], d["label"]) for d in demos["demos"]]))

    r = 0  # round 0's selection and student
    selection = storage.read_json(fs, f"{root}/{r}/selection/report.json")
    labelled = selection["labelled_rows"]
    assert labelled + selection["abstained_rows"] == 60
    assert selection["clean"] + selection["noisy"] == labelled
    # fraction 0.5: ceil(n / 2) clean rows per class
    assert all(c["clean"] == -(-(c["clean"] + c["noisy"]) // 2) for c in selection["per_class"].values())
    assert selection["to_relabel"] == selection["noisy"] + selection["abstained_rows"]
    assert selection["student_rows"] == selection["clean"] + selection["pseudo_labelled"]
    student_data = storage.read_parquet(fs, f"{root}/{r}/selection/student_data/data")
    assert student_data.num_rows == selection["student_rows"]
    assert len(set(student_data.column("id").to_pylist())) == student_data.num_rows
    relabel = storage.read_parquet(fs, f"{root}/{r}/selection/relabel_input").to_pylist()
    assert len(relabel) == selection["to_relabel"]
    assert all(len(json.loads(row["demos"])) <= 2 for row in relabel)
    assert selection["teacher_accuracy"]["matched_rows"] == labelled
    student = storage.read_json(fs, f"{root}/{r}/student/report.json")
    assert student["rows"]["labelled"] == selection["student_rows"]
    info = state["rounds"][str(r)]["freeal"]
    assert info["clean"] == selection["clean"] and "test" in info["warmup_evaluation"]

    # Round 1: the noisy rows of round 0 were relabelled (each with its own demos) and merged in.
    relabelled = storage.read_parquet(fs, f"{root}/1/relabelled/data")
    noisy0 = storage.read_parquet(fs, f"{root}/0/selection/relabel_input")
    assert sorted(relabelled.column("id").to_pylist()) == sorted(noisy0.column("id").to_pylist())
    merge = storage.read_json(fs, f"{root}/1/merge.json")
    labels1 = storage.read_parquet(fs, f"{root}/1/labels/data")
    assert merge["rows"] == labels1.num_rows == 60
    before = dict(zip(labels0.column("id").to_pylist(), labels0.column("hard_label").to_pylist()))
    after = dict(zip(labels1.column("id").to_pylist(), labels1.column("hard_label").to_pylist()))
    assert merge["labels_changed"] == sum(before[i] != after[i] for i in before)
    assert all(before[i] == after[i] for i in before if i not in set(noisy0.column("id").to_pylist()))
    relabel_report = storage.read_json(fs, f"{root}/1/relabelled/report.json")
    assert relabel_report["per_row_demos"]["column"] == "demos"
    assert f"relabelling changed {merge['labels_changed']} of 60 labels" in stopped.stdout


@pytest.mark.slow
def test_a_failing_step_is_reported_with_its_log_and_the_manifest_stays_readable(rounds_config, tmp_path):
    config = rounds_config()
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
