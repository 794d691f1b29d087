"""`raydistill retrain` end to end on S3 (moto on loopback): two periods with the tiny teacher and student,
the registry, the gate, the drift report, idempotent runs, predict by version."""

from __future__ import annotations

import dataclasses
import json

import pyarrow.fs as pafs

from pipeline import storage
from pipeline.cli import main
from pipeline.config import DistillConfig, RetrainConfig, StudentConfig
from pipeline.registry import Registry
from pipeline.retrain import format_retrain_report, run_retrain
from pipeline.smoke import build_tiny_student
from tests.conftest import LABELS

WORDS = "profit loss rose fell record lawsuit meeting quarter results shares market growth".split()


def texts(ids: list[str]) -> list[dict]:
    return [{"id": i, "text": f"{WORDS[n % len(WORDS)]} {WORDS[(n * 7 + 3) % len(WORDS)]} report {i}"}
            for n, i in enumerate(ids)]


def put_partition(fs, bucket: str, name: str, rows: list[dict]) -> None:
    with fs.open_output_stream(f"{bucket}/corpus/{name}/part-0.jsonl") as out:
        out.write("".join(json.dumps(row) + "\n" for row in rows).encode())


def labelled_ids(fs, path: str) -> list[str]:
    return sorted(storage.read_parquet(fs, path, columns=["id"]).column("id").to_pylist())


def test_two_periods_label_new_ids_only_register_gate_drift_and_predict_by_version(
        tmp_path, make_config, ray_cluster, s3_endpoint, s3_bucket, capsys):
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.split("://")[1], scheme="http", region="us-east-1")
    storage_config = {"endpoint_url": s3_endpoint, "region": "us-east-1"}
    root = f"s3://{s3_bucket}/retrain"
    gold = tmp_path / "test.jsonl"
    gold.write_text("".join(json.dumps({"text": row["text"], "label": LABELS[n % 3]}) + "\n"
                            for n, row in enumerate(texts([f"g{i}" for i in range(30)]))))
    student = build_tiny_student(tmp_path / "student", [row["text"] for row in texts([f"s{i}" for i in range(200)])])
    config = make_config("unused", "unused", storage=storage_config)
    config = dataclasses.replace(
        config, student=StudentConfig(model=str(student), max_length=16),
        # The tiny teacher's labels are noise: every row is trained on (min_consistency 0).
        distill=DistillConfig(output="unused", test=str(gold), epochs=1, batch_size=8, learning_rate=1e-3,
                              min_consistency=0.0, checkpoint_every_batches=0),
        retrain=RetrainConfig(root=root, input=f"s3://{s3_bucket}/corpus/", agreement_rows=1000))
    first_ids = [f"a{i}" for i in range(24)]
    put_partition(fs, s3_bucket, "dt=2026-11-01", texts(first_ids))
    logs: list[str] = []

    first = run_retrain(config, log=logs.append)
    assert first["status"] == "done" and first["partitions"] == ["dt=2026-11-01"]
    assert first["labelling"]["dt=2026-11-01"]["labelled_total"] == 24
    assert first["version"] == "v0001" and first["promoted"] and first["gate"]["reasons"] == ["no production model yet"]
    registry = Registry.open(root, config.storage)
    info = registry.info("v0001")
    assert info["teacher_model"] == config.teacher.model and len(info["prompt_hash"]) > 8
    assert info["label_data"] == [{"partition": "dt=2026-11-01", "uri": f"{root}/labels/dt=2026-11-01", "rows": 24,
                                   "teacher_model": config.teacher.model, "prompt_hash": info["prompt_hash"]}]
    assert info["metrics"]["test"]["examples"] == 30 and registry.production() == "v0001"

    # The same tick again: nothing new, nothing written.
    assert run_retrain(config, log=logs.append)["status"] == "nothing to do"
    assert "no new partition" in logs[-1] and registry.versions() == ["v0001"]

    # Day two: 8 texts seen on day one come again; only the 16 new ones are labelled. Production
    # cannot be beaten by more than 1.0, so the candidate is registered and not promoted.
    second_ids = first_ids[:8] + [f"b{i}" for i in range(16)]
    put_partition(fs, s3_bucket, "dt=2026-11-02", texts(second_ids))
    strict = dataclasses.replace(config, retrain=dataclasses.replace(config.retrain, min_improvement=1.0, window=1))
    second = run_retrain(strict, log=logs.append)
    rows = second["labelling"]["dt=2026-11-02"]
    assert rows["input"] == 24 and rows["skipped_already_committed"] == 8 and rows["labelled_total"] == 16
    assert labelled_ids(fs, f"{s3_bucket}/retrain/labels/dt=2026-11-02/data") == sorted(second_ids[8:])
    assert second["trained_on"] == ["dt=2026-11-02"]  # window 1
    assert second["version"] == "v0002" and not second["promoted"] and second["production"] == "v0001"
    assert "not more than 1.0" in second["gate"]["reasons"][0]
    printed = format_retrain_report(second)
    assert "dt=2026-11-02: 16 rows labelled (16 this run, 8 skipped as done before" in printed
    assert "not promoted: macro_f1" in printed and "production now v0001" in printed
    distilled = storage.read_json(fs, f"{s3_bucket}/retrain/runs/dt=2026-11-02/distill/report.json")
    assert distilled["rows"]["labelled"] == 16  # the window's partition alone
    assert registry.info("v0002")["train_rows"] == distilled["rows"]["train"] > 0

    # The drift report compares the new partition with the first, for the candidate and production.
    run_path = f"{s3_bucket}/retrain/runs/dt=2026-11-02"
    drift = storage.read_json(fs, f"{run_path}/drift.json")
    assert drift["new_partitions"] == ["dt=2026-11-02"] and drift["earlier_partitions"] == ["dt=2026-11-01"]
    assert [p["rows"] for p in drift["teacher_over_time"]] == [24, 16]
    answered = sum(n > 0 for n in storage.read_parquet(
        fs, f"{s3_bucket}/retrain/labels/dt=2026-11-02/data", columns=["n_valid"]).column("n_valid").to_pylist())
    for model in ("candidate", "production"):  # every answered new text (fewer than agreement_rows)
        agreement = drift["student_teacher_agreement"][model]
        assert agreement["rows"] == answered and 0 <= agreement["agree"] <= answered
        assert agreement["agreement"] == round(agreement["agree"] / answered, 4)
    assert abs(sum(drift["label_distribution"]["new"].values()) - 1) < 1e-3
    with fs.open_input_stream(f"{run_path}/drift.png") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    record = storage.read_json(fs, f"{run_path}/run.json")
    assert record["version"] == "v0002" and record["promoted"] is False
    state = storage.read_json(fs, f"{s3_bucket}/retrain/state.json")
    assert state["partitions"] == {"dt=2026-11-01": "dt=2026-11-01", "dt=2026-11-02": "dt=2026-11-02"}
    assert [(r["version"], r["promoted"]) for r in state["runs"]] == [("v0001", True), ("v0002", False)]

    # Asking for a period already done does nothing and says so.
    assert run_retrain(strict, period="dt=2026-11-02", log=logs.append)["status"] == "nothing to do"
    assert "dt=2026-11-02 was done by run dt=2026-11-02 (version v0002, not promoted)" in logs[-1]

    # A run that crashed after registering its candidate, before state.json: run again, it labels nothing,
    # resumes the finished distillation and keeps the version and the decision it had.
    state["partitions"].pop("dt=2026-11-02")
    state["runs"].pop()
    storage.write_json(fs, f"{s3_bucket}/retrain/state.json", state)
    again = run_retrain(strict, log=logs.append)
    assert again["labelling"]["dt=2026-11-02"]["labelled_this_run"] == 0
    assert again["version"] == "v0002" and registry.versions() == ["v0001", "v0002"]
    assert again["gate"] == second["gate"] and again["production"] == "v0001"

    # The registry from the command line; predict by version name.
    endpoint = ["--s3-endpoint", s3_endpoint]
    capsys.readouterr()
    assert main(["models", "list", root, *endpoint]) == 0
    listed = capsys.readouterr().out
    assert "* v0001" in listed and "  v0002" in listed
    assert main(["models", "promote", root, "v0002", *endpoint]) == 0 and registry.production() == "v0002"
    assert main(["models", "rollback", root, *endpoint]) == 0 and registry.production() == "v0001"
    assert main(["models", "rollback", root, *endpoint]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err
    out = f"s3://{s3_bucket}/predicted"
    assert main(["predict", "production", f"s3://{s3_bucket}/corpus/dt=2026-11-02/", out, "--registry", root,
                 *endpoint]) == 0
    manifest = storage.read_json(fs, f"{s3_bucket}/predicted/manifest.json")
    assert manifest["model"] == f"{root}/models/v0001/model"
    assert labelled_ids(fs, f"{s3_bucket}/predicted/data") == sorted(second_ids)
