"""A FreeAL rounds run, every step in the orchestrator's own process (``rounds.address: local``).

In a module of its own so that CI's two pytest processes (scripts/test.sh) share the slow tests evenly.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline import storage
from pipeline.config import Demo
from pipeline.prompts import prompt_hash
from pipeline.rounds import EXIT_AFTER_ENV
from tests.conftest import LABELS
from tests.test_distill import labelled_rows, tiny_student  # noqa: F401
from tests.test_rounds import _run_cli, local_rounds_config  # noqa: F401


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
                           freeal_gold=rounds_config.upload(gold, "freeal-gold/gold.jsonl"), address="local")
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
