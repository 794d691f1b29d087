"""The synthesis steps of a round, run in-process: seed synthesis and extrapolation on the tiny
teacher's real vLLM engine; the filter step on hand-written candidates."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schemas, storage
from pipeline.config import DistillConfig, RoundsConfig, StudentConfig
from pipeline.evaluate import PREDICTIONS
from pipeline.generate import PROMPT_TOO_LONG
from pipeline.round_steps import CANDIDATES, relabel_report, run_filter, run_seed, run_synthesize
from pipeline.round_steps import labelled_rows as synthetic_rows
from tests.conftest import LABELS
from tests.test_distill import labelled_rows, write_labelled


@pytest.fixture
def step_config(tmp_path, make_config):
    labels = write_labelled(tmp_path / "labels", labelled_rows(30))
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in [
        ("Quarterly profit fell sharply after the recall.", "negative"),
        ("The board meets on Tuesday in Helsinki.", "neutral"),
        ("Sales hit a record high in the fourth quarter.", "positive"),
    ]))

    def make(teacher=None, **rounds):
        config = make_config(str(labels), str(labels), teacher={"samples": 1, "max_tokens": 40, **(teacher or {})})
        return dataclasses.replace(
            config, student=StudentConfig(model="unused"),
            distill=DistillConfig(output=str(tmp_path / "student"), labels=str(labels), validation=str(validation)),
            rounds=RoundsConfig(output=str(tmp_path / "rounds"), **rounds),
        )

    return make


def _candidates(rows):
    return pa.Table.from_pylist([
        {"request_id": f"q{i}", "source": "test", "prompt_tokens": 5, "completion_tokens": 7, "problem": None, **row}
        for i, row in enumerate(rows)
    ], schema=CANDIDATES)


def test_filter_step_counts_every_drop_and_writes_labelled_rows(step_config, ray_cluster, tmp_path):
    config = step_config(min_chars=10)
    training_text = labelled_rows(30)[0]["text"]
    extra = tmp_path / "rounds" / "rounds" / "1" / "extra"
    extra.mkdir(parents=True)
    pq.write_table(_candidates([
        {"text": "Shares of the lender slid after a surprise writedown.", "label": "negative"},
        {"text": "Shares of the lender slid after a surprise writedown!", "label": "negative"},  # twin of the first
        {"text": "quarterly profit fell sharply after the recall", "label": "negative"},  # a validation text
        {"text": training_text, "label": LABELS[0]},  # already in round 0's data
        {"text": "too short", "label": "neutral"},
        {"text": "A new office opened in the city centre this spring.", "label": "sideways"},
        {"text": None, "label": "positive", "problem": "another label announced"},
        {"text": "Revenue beat every analyst estimate by a wide margin.", "label": "positive"},
    ]), extra / "candidates.parquet")

    report = run_filter(config, 1, log=lambda _: None)

    assert report["candidates"] == 8 and report["kept"] == 2 and report["training_rows"] == 30
    assert report["dropped"] == {
        "near duplicate of another new example": 1,
        "near duplicate of a validation or test text": 1,
        "near duplicate of a training text": 1,
        "too short": 1,
        "label not in the label set": 1,
        "another label announced": 1,
    }
    assert report["label_distribution"] == {"negative": 1, "neutral": 0, "positive": 1}
    data = storage.read_parquet(*storage.resolve(str(extra / "data"), config.storage))
    schemas.check_columns(data.schema, schemas.LABELLED, "extra")
    assert data.column("hard_label").to_pylist() == ["negative", "positive"]
    assert data.column("soft_label").to_pylist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert len(set(data.column("id").to_pylist())) == 2
    assert json.loads((extra / "manifest.json").read_text())["labels"] == LABELS
    assert json.loads((extra / "report.json").read_text())["kept"] == 2


@pytest.mark.slow
def test_seed_synthesis_writes_a_dataset_the_distillation_job_reads(step_config, ray_cluster, tmp_path):
    config = step_config(seed_synthesis=True, reasons_per_label=3, seed_examples_per_label=4, min_chars=2)
    report = run_seed(config, 0, log=lambda _: None)

    seed = tmp_path / "rounds" / "seed"
    candidates = pq.read_table(seed / "candidates.parquet")
    assert report["requests"] == 3 + 3 * 4  # one reasons request per label, then the examples
    assert report["candidates"] == candidates.num_rows == report["kept"] + sum(report["dropped"].values())
    assert set(report["reasons"]) == set(LABELS) and all(1 <= len(r) <= 3 for r in report["reasons"].values())
    assert sum(report["label_distribution"].values()) == report["kept"]
    if report["kept"]:
        data = storage.read_parquet(*storage.resolve(str(seed / "data"), config.storage))
        schemas.check_columns(data.schema, schemas.LABELLED, "seed")
        assert data.num_rows == report["kept"]
        assert set(data.column("hard_label").to_pylist()) <= set(LABELS)
    assert json.loads((seed / "report.json").read_text())["step"] == "seed"


@pytest.mark.slow
def test_extrapolation_asks_once_per_error_and_keeps_at_most_m_per_answer(step_config, ray_cluster, tmp_path):
    config = step_config(examples_per_error=2, max_errors=3)
    evaluation = tmp_path / "rounds" / "rounds" / "0" / "student" / "evaluation"
    evaluation.mkdir(parents=True)
    rows = [(1, "Profit fell.", "negative", "positive"), (2, "The board meets.", "neutral", "neutral"),
            (3, "x " * 2000, "neutral", "positive"),  # too long for the context: no request can fit it
            (4, "Costs rose.", "negative", "neutral"), (5, "Record sales.", "positive", "negative")]
    pq.write_table(pa.Table.from_pylist(
        [{"row": r, "text": t, "label": g, "predicted": p, "confidence": 0.5} for r, t, g, p in rows],
        schema=PREDICTIONS), evaluation / "validation_predictions.parquet")
    config = dataclasses.replace(config, rounds=dataclasses.replace(config.rounds, max_chars=20000))

    report = run_synthesize(config, 1, log=lambda _: None)

    errors = pq.read_table(tmp_path / "rounds" / "rounds" / "1" / "errors.parquet")
    assert report["errors"] == errors.num_rows == 3  # 4 errors, a seeded sample of max_errors=3
    assert set(errors.column("row").to_pylist()) == {1, 3, 4}  # the sample is seeded by the round
    assert report["requests"] == 3
    candidates = pq.read_table(tmp_path / "rounds" / "rounds" / "1" / "extra" / "candidates.parquet")
    per_request = {}
    for row in candidates.to_pylist():
        per_request.setdefault(row["request_id"], []).append(row)
    assert len(per_request) == 3  # every request leaves at least one row: an example or the reason
    assert all(len(rows) <= 2 for rows in per_request.values())
    assert [row["problem"] for row in per_request["round1/row3"]] == [PROMPT_TOO_LONG]
    labels = {r: g for r, _, g, _ in rows}
    assert all(row["label"] == labels[int(rid.split("row")[1])] for rid, rs in per_request.items() for row in rs)


def test_relabel_report_counts_changed_unchanged_abstained_and_quarantined(step_config, tmp_path):
    config = step_config(strategy="promptmix")
    intended = [{"text": f"mixed example {i}", "label": label, "source": "mix", "prompt_tokens": 1,
                 "completion_tokens": 1} for i, label in enumerate(["negative", "negative", "neutral", "positive",
                                                                      "positive"])]
    table = synthetic_rows(intended, config.task, "teacher", "r1")
    extra = tmp_path / "rounds" / "rounds" / "1" / "extra" / "data"
    extra.mkdir(parents=True)
    pq.write_table(table, extra / "part-0.parquet")
    # The labelling job's answer: row 0 kept, row 1 moved to positive, row 2 abstained,
    # row 3 moved to neutral, row 4 quarantined (absent from the output).
    ids = table.column("id").to_pylist()
    relabelled = table.slice(0, 4).to_pylist()
    for row, (hard, n_valid) in zip(relabelled, [("negative", 1), ("positive", 1), (None, 0), ("neutral", 1)]):
        row.update(hard_label=hard, n_valid=n_valid)
    out = tmp_path / "rounds" / "rounds" / "1" / "relabelled" / "data"
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(relabelled, schema=schemas.LABELLED), out / "part-0.parquet")

    report = relabel_report(config, 1)

    assert report == {"examples": 5, "labelled": 4, "quarantined": 1, "relabelled": 2, "unchanged": 1,
                      "abstained": 1, "changes": {"negative -> positive": 1, "positive -> neutral": 1}}
    assert len(set(ids)) == 5


def test_a_round_trains_on_round_0_and_every_earlier_round_that_kept_examples(step_config, tmp_path):
    from pipeline.strategies import STRATEGIES

    def training_data(config, r, arm, kept):
        return STRATEGIES[config.rounds.strategy].training_data(config, r, arm, kept)


    kept = {1: 5, 2: 0, 3: 4}.__getitem__  # round 2's filter kept nothing
    rounds = str(tmp_path / "rounds" / "rounds")
    labels = str(tmp_path / "labels")
    extrapolation = step_config()
    assert training_data(extrapolation, 0, "", kept) == [labels]
    assert training_data(extrapolation, 3, "", kept) == [labels, f"{rounds}/1/extra", f"{rounds}/3/extra"]
    promptmix = step_config(strategy="promptmix")  # each round adds its relabelled examples
    assert training_data(promptmix, 3, "", kept) == [labels, f"{rounds}/1/relabelled", f"{rounds}/3/relabelled"]
    # The comparison arm: this round's examples with their intended labels, earlier rounds as trained.
    assert training_data(promptmix, 3, "intended", kept) == [labels, f"{rounds}/1/relabelled", f"{rounds}/3/extra"]
    seeded = step_config(seed_synthesis=True)  # round 0 trains on the seed synthesis
    assert training_data(seeded, 1, "", kept) == [str(tmp_path / "rounds" / "seed"), f"{rounds}/1/extra"]
