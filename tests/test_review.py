"""Human review in Label Studio (pipeline/review.py): export order and limit, labelling configs,
results per task type, the import of a Label Studio export; then the round trip through a real Label
Studio server (its own virtualenv, scripts/install_labelstudio.sh)."""

from __future__ import annotations

import json
import os
import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import review
from pipeline.config import Config, DataConfig, Label, TaskConfig, TeacherConfig
from pipeline.errors import ConfigError
from pipeline.review import ReviewError, export_review, import_review

import labelstudio_harness as ls  # tests/ is on sys.path under pytest's default import mode

LABELS = {"classification": ["negative", "neutral", "positive"],
          "multilabel": ["billing", "bug", "praise"],
          "spans": ["PER", "LOC", "ORG"]}
TYPES = list(LABELS)

# The type's own columns, written by hand (the labelling job's schema, pipeline/tasks/*, may move on).
SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("label", pa.string()),
                  ("score", pa.float64())])
LABEL_FIELDS = {
    "classification": [pa.field("hard_label", pa.string()), pa.field("soft_label", pa.list_(pa.float64()))],
    "multilabel": [pa.field("labels", pa.list_(pa.string())),
                   pa.field("label_scores", pa.list_(pa.float64()))],
    "spans": [pa.field("spans", pa.list_(SPAN))],
}


def schema(task_type: str) -> pa.Schema:
    return pa.schema([pa.field("id", pa.string(), nullable=False),
                      pa.field("text", pa.string(), nullable=False),
                      pa.field("votes", pa.list_(pa.string()), nullable=False), *LABEL_FIELDS[task_type],
                      pa.field("consistency", pa.float64(), nullable=False),
                      pa.field("n_valid", pa.int32(), nullable=False), pa.field("rationale", pa.string()),
                      pa.field("teacher_model", pa.string()), pa.field("prompt_hash", pa.string())])


def config(tmp_path: Path, task_type: str, labels: str | None = None) -> Config:
    task = TaskConfig(name=f"{task_type}-task", instruction="Label the text.", type=task_type,
                      labels=[Label(name, f"about {name}") for name in LABELS[task_type]])
    data = DataConfig(input=str(tmp_path / "in.jsonl"), output=labels or str(tmp_path / "labels"))
    return Config(task=task, teacher=TeacherConfig(model="tiny-teacher"), data=data)


# One text per row; the teacher's answer per type is derived from the row's index so that every
# type gets abstentions, ties in consistency and (multilabel, spans) empty answers.
TEXTS = ["Alice met Bob in Paris.", "The invoice was wrong twice.", "Great app, Acme rocks!",
         "Nothing to see here.", "Carol flew to Berlin for Acme.", "It crashes on start.",
         "Dave likes Rome.", "Refund me now.", "Eve works at Initech in Oslo.", "Fine, I guess."]


def teacher_answer(task_type: str, i: int, text: str) -> dict[str, Any]:
    names = LABELS[task_type]
    if task_type == "classification":
        return {"hard_label": names[i % 3], "soft_label": [1 / 3, 1 / 3, 1 / 3]}
    if task_type == "multilabel":
        on = [names[j] for j in range(3) if (i >> j) & 1]
        return {"labels": on, "label_scores": [float((i >> j) & 1) for j in range(3)]}
    words = [(w.strip(".,!"), text.index(w.strip(".,!"))) for w in text.split() if w[:1].isupper()]
    spans = [{"start": at, "end": at + len(word), "label": names[k % 3], "score": 0.5 + 0.1 * k}
             for k, (word, at) in enumerate(words[1:])]  # the sentence's first word is no entity
    return {"spans": spans}


def labelled_rows(task_type: str, consistencies: list[float], abstain: set[int]) -> list[dict[str, Any]]:
    rows = []
    for i, consistency in enumerate(consistencies):
        text = TEXTS[i % len(TEXTS)]
        answer = teacher_answer(task_type, i, text)
        if i in abstain:
            answer = {key: None for key in answer}
        rows.append({"id": f"r{i:03d}", "text": text, "votes": ["x"], **answer,
                     "consistency": 0.0 if i in abstain else consistency, "n_valid": 0 if i in abstain else 4,
                     "rationale": None, "teacher_model": "tiny-teacher", "prompt_hash": "abc123"})
    return rows


def write_labels(root: Path, task_type: str, rows: list[dict[str, Any]], files: int = 2) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    for part in range(files):
        chunk = rows[part::files]
        table = pa.Table.from_pylist(chunk, schema=schema(task_type))
        pq.write_table(table, root / "data" / f"part-{part}.parquet")


# Ten rows: r003 and r007 abstain; r001, r004 and r008 tie at 0.5.
CONSISTENCY = [0.75, 0.5, 1.0, 0.0, 0.5, 0.25, 1.0, 0.0, 0.5, 0.875]
ABSTAIN = {3, 7}
ORDER = ["r003", "r007", "r005", "r001", "r004", "r008", "r000", "r009", "r002", "r006"]


@pytest.fixture(params=TYPES)
def labelled(request, tmp_path, monkeypatch):
    """A config of each type and its labelled rows in two files, read in batches of three rows."""
    task_type = request.param
    monkeypatch.setattr(review, "BATCH_ROWS", 3)  # several batches per file: the kept set is merged
    rows = labelled_rows(task_type, CONSISTENCY, ABSTAIN)
    write_labels(tmp_path / "labels", task_type, rows)
    return config(tmp_path, task_type), {row["id"]: row for row in rows}


def read_export(out: Path) -> tuple[list[dict[str, Any]], ET.Element, dict[str, Any]]:
    return (json.loads((out / "tasks.json").read_text()),
            ET.fromstring((out / "label_config.xml").read_text()),
            json.loads((out / "manifest.json").read_text()))


# ---------------------------------------------------------------------------------- export
def test_export_sorts_abstentions_then_lowest_consistency_and_keeps_the_limit(labelled, tmp_path):
    cfg, rows = labelled
    manifest = export_review(cfg, str(tmp_path / "review"), limit=6)
    tasks, _, written = read_export(tmp_path / "review")
    assert [task["data"]["id"] for task in tasks] == ORDER[:6]
    assert all(set(task["data"]) == {"id", "text"} for task in tasks)
    assert [task["data"]["text"] for task in tasks] == [rows[i]["text"] for i in ORDER[:6]]
    assert [task["predictions"] for task in tasks[:2]] == [[], []]  # abstentions: no prediction
    scores = [task["predictions"][0]["score"] for task in tasks[2:]]
    assert scores == [0.25, 0.5, 0.5, 0.5]
    assert {task["predictions"][0]["model_version"] for task in tasks[2:]} == {"tiny-teacher@abc123"}
    assert written == manifest
    assert manifest["rows_exported"] == 6 and manifest["abstained_exported"] == 2 and manifest["limit"] == 6
    assert manifest["task_type"] == cfg.task.type and manifest["labels"] == LABELS[cfg.task.type]
    assert manifest["consistency_range"] == [0.25, 0.5] and "consistency ascending" in manifest["sort"]


def test_export_without_limit_takes_every_row_and_refuses_above_the_cap(labelled, tmp_path, monkeypatch):
    cfg, _ = labelled
    export_review(cfg, str(tmp_path / "all"))
    tasks, _, manifest = read_export(tmp_path / "all")
    assert [task["data"]["id"] for task in tasks] == ORDER and manifest["limit"] is None
    monkeypatch.setattr(review, "MAX_TASKS", 9)
    with pytest.raises(ConfigError, match=r"holds 10 labelled rows.*pass --limit N"):
        export_review(cfg, str(tmp_path / "too-many"))
    with pytest.raises(ConfigError, match="--limit: must be between 1 and 9"):
        export_review(cfg, str(tmp_path / "too-many"), limit=10)


def test_the_kept_set_is_the_full_sort_cut_at_the_limit(tmp_path, monkeypatch):
    """Many files and batches, many ties: the streamed selection equals sorting everything."""
    monkeypatch.setattr(review, "BATCH_ROWS", 7)
    rng = random.Random(0)
    consistencies = [rng.choice([0.25, 0.5, 0.75, 1.0]) for _ in range(400)]
    abstain = set(rng.sample(range(400), 30))
    rows = labelled_rows("classification", consistencies, abstain)
    rng.shuffle(rows)
    write_labels(tmp_path / "labels", "classification", rows, files=5)
    expected = sorted(rows, key=lambda r: (r["n_valid"] > 0, r["consistency"], r["id"]))
    fs, files, _ = review._labelled_files(config(tmp_path, "classification"), None)
    for limit in (1, 29, 30, 57, 400):
        kept = review.most_uncertain(fs, files, limit)
        assert kept["id"].to_pylist() == [r["id"] for r in expected[:limit]]


def test_rows_without_provenance_take_the_configs_teacher_and_prompt(tmp_path):
    from pipeline.prompts import prompt_hash

    rows = labelled_rows("classification", CONSISTENCY, ABSTAIN)
    table = pa.Table.from_pylist(rows, schema=schema("classification"))
    table = table.drop_columns(["teacher_model", "prompt_hash"])
    (tmp_path / "labels" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "labels" / "data" / "part-0.parquet")
    cfg = config(tmp_path, "classification")
    manifest = export_review(cfg, str(tmp_path / "review"), limit=3)
    assert manifest["model_versions"] == [f"tiny-teacher@{prompt_hash(cfg.task)}"]


def test_labelling_config_per_type(labelled, tmp_path):
    cfg, _ = labelled
    export_review(cfg, str(tmp_path / "review"), limit=3)
    _, view, _ = read_export(tmp_path / "review")
    assert view.tag == "View"
    (text,) = view.findall("Text")
    assert text.attrib == {"name": "text", "value": "$text"}
    if cfg.task.type == "spans":
        (control,) = view.findall("Labels")
        items = control.findall("Label")
        assert [child.tag for child in view] == ["Labels", "Text"]
    else:
        (control,) = view.findall("Choices")
        items = control.findall("Choice")
        expected = {"classification": "single", "multilabel": "multiple"}[cfg.task.type]
        assert control.attrib["choice"] == expected
    assert control.attrib["name"] == "label" and control.attrib["toName"] == "text"
    assert [item.attrib["value"] for item in items] == LABELS[cfg.task.type]


def test_label_names_are_escaped_in_the_config():
    xml = review.ClassificationReview(['say "no"', "a<b & c"]).label_config()
    assert [c.attrib["value"] for c in ET.fromstring(xml).iter("Choice")] == ['say "no"', "a<b & c"]


def test_prediction_results_per_type(labelled, tmp_path):
    cfg, rows = labelled
    export_review(cfg, str(tmp_path / "review"))
    tasks, _, _ = read_export(tmp_path / "review")
    for task in tasks:
        row = rows[task["data"]["id"]]
        if not task["predictions"]:
            assert row["n_valid"] == 0
            continue
        (prediction,) = task["predictions"]
        assert prediction["score"] == row["consistency"]
        result = prediction["result"]
        if cfg.task.type == "classification":
            assert result == [{"from_name": "label", "to_name": "text", "type": "choices",
                               "value": {"choices": [row["hard_label"]]}}]
        elif cfg.task.type == "multilabel":
            expected = [{"from_name": "label", "to_name": "text", "type": "choices",
                         "value": {"choices": row["labels"]}}] if row["labels"] else []
            assert result == expected  # no label on: an empty result, which Label Studio accepts
        else:
            assert len(result) == len(row["spans"])
            for region, span in zip(result, row["spans"]):
                assert (region["type"], region["from_name"], region["to_name"]) == ("labels", "label", "text")
                assert region["value"] == {"start": span["start"], "end": span["end"],
                                           "labels": [span["label"]],
                                           "text": row["text"][span["start"]:span["end"]]}
                assert region["score"] == span["score"]
            assert len({region["id"] for region in result}) == len(result)


def test_every_task_type_has_a_review_format():
    from pipeline import tasks

    assert set(review.FORMATS) == set(tasks.TYPES)
    with pytest.raises(ConfigError, match="task.type: review supports"):
        review.review_format(TaskConfig(name="t", instruction="i", labels=[], type="ranking"))


# ---------------------------------------------------------------------------------- import
def ls_export(tasks: list[dict[str, Any]],
              annotations: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A Label Studio JSON export of ``tasks`` as exported (with Label Studio's task ids), with
    ``annotations`` by row id."""
    return [{"id": 100 + n, "data": task["data"], "predictions": [n] if task["predictions"] else [],
             "annotations": annotations.get(task["data"]["id"], [])} for n, task in enumerate(tasks)]


def annotation(result: list[dict[str, Any]], cancelled: bool = False, at: str = "2026-01-01T10:00:00.000000Z",
               id: int = 1) -> dict[str, Any]:
    return {"id": id, "result": result, "was_cancelled": cancelled, "created_at": at, "updated_at": at}


def reviewer_result(task_type: str, answer: Any, text: str) -> list[dict[str, Any]]:
    if task_type == "spans":
        return [{"id": f"r{k}", "from_name": "label", "to_name": "text", "type": "labels",
                 "value": {"start": s["start"], "end": s["end"], "text": text[s["start"]:s["end"]],
                           "labels": [s["label"]]}} for k, s in enumerate(answer)]
    return [{"from_name": "label", "to_name": "text", "type": "choices",
             "value": {"choices": [answer] if task_type == "classification" else answer}}]


FIELD = {"classification": "label", "multilabel": "labels", "spans": "spans"}  # the gold set's field
# What the reviewer answers per type: a changed answer, and the teacher's own again.
CHANGED = {"classification": "neutral", "multilabel": ["bug", "praise"],
           "spans": [{"start": 0, "end": 4, "label": "PER"}]}


def teacher_gold(task_type: str, row: dict[str, Any]) -> Any:
    if task_type == "classification":
        return row["hard_label"]
    if task_type == "multilabel":
        return row["labels"]
    return [{k: s[k] for k in ("start", "end", "label")} for s in row["spans"]]


def read_gold(path: Path) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in map(json.loads, path.read_text().splitlines())}


def test_import_takes_the_reviewers_labels_and_keeps_the_teachers_elsewhere(labelled, tmp_path):
    cfg, rows = labelled
    kind = cfg.task.type
    field = FIELD[kind]
    export_review(cfg, str(tmp_path / "review"))
    tasks, _, _ = read_export(tmp_path / "review")
    text = {row_id: row["text"] for row_id, row in rows.items()}
    changed = "r005"
    same = "r001"
    annotations = {
        # a first answer, then a later change of mind: the latest counts
        changed: [annotation(reviewer_result(kind, teacher_gold(kind, rows[changed]), text[changed]), id=1),
                  annotation(reviewer_result(kind, CHANGED[kind], text[changed]),
                             at="2026-01-02T09:00:00.000000Z", id=2),
                  annotation([], cancelled=True, at="2026-01-03T09:00:00.000000Z", id=3)],
        same: [annotation(reviewer_result(kind, teacher_gold(kind, rows[same]), text[same]), id=4)],
        # an abstention, reviewed
        "r003": [annotation(reviewer_result(kind, CHANGED[kind], text["r003"]), id=5)],
        "r009": [annotation([], cancelled=True, id=6)],  # skipped: the teacher's stays
    }
    export_file = tmp_path / "ls-export.json"
    export_file.write_text(json.dumps(ls_export(tasks, annotations)))
    report = import_review(cfg, str(export_file), str(tmp_path / "gold.jsonl"))
    gold = read_gold(tmp_path / "gold.jsonl")

    assert report == {"tasks": 10, "reviewed": 3, "kept_teacher": 6, "changed_by_reviewer": 2,
                      "left_out_abstained": 1, "without_annotations": 6, "gold_rows": 9,
                      "output": str(tmp_path / "gold.jsonl")}
    assert "r007" not in gold  # abstained, not reviewed: no label to keep
    assert gold[changed] == {"id": changed, "text": text[changed], field: CHANGED[kind], "source": "review"}
    assert gold["r003"][field] == CHANGED[kind] and gold["r003"]["source"] == "review"
    assert gold[same][field] == teacher_gold(kind, rows[same]) and gold[same]["source"] == "review"
    for row_id in set(gold) - {changed, same, "r003"}:
        assert gold[row_id] == {"id": row_id, "text": text[row_id], field: teacher_gold(kind, rows[row_id]),
                                "source": "teacher"}
    assert "6 kept the teacher's labels" in review.format_import_report(report)


def test_a_label_outside_the_label_set_is_an_error_naming_the_task(labelled, tmp_path):
    cfg, rows = labelled
    kind = cfg.task.type
    export_review(cfg, str(tmp_path / "review"), limit=4)
    tasks, _, _ = read_export(tmp_path / "review")
    bad = {"classification": "furious", "multilabel": ["billing", "furious"],
           "spans": [{"start": 0, "end": 4, "label": "furious"}]}[kind]
    export = ls_export(tasks, {"r001": [annotation(reviewer_result(kind, bad, rows["r001"]["text"]))]})
    (tmp_path / "ls-export.json").write_text(json.dumps(export))
    task_id = next(task["id"] for task in export if task["data"]["id"] == "r001")
    with pytest.raises(ReviewError, match=rf"Label Studio task {task_id} \(id 'r001'\): label 'furious'"):
        import_review(cfg, str(tmp_path / "ls-export.json"), str(tmp_path / "gold.jsonl"))
    assert not (tmp_path / "gold.jsonl").exists()


def test_malformed_exports_are_errors_naming_the_task(tmp_path):
    cfg = config(tmp_path, "spans")
    write_labels(tmp_path / "labels", "spans", labelled_rows("spans", CONSISTENCY, ABSTAIN))
    text = TEXTS[0]

    def attempt(export: Any) -> None:
        (tmp_path / "e.json").write_text(json.dumps(export))
        import_review(cfg, str(tmp_path / "e.json"), str(tmp_path / "gold.jsonl"))

    region = {"from_name": "label", "to_name": "text", "type": "labels",
              "value": {"start": 5, "end": 99, "labels": ["PER"]}}
    with pytest.raises(ReviewError, match=r"task 7 \(id 'r000'\): a region at 5\.\.99 is not a span"):
        attempt([{"id": 7, "data": {"id": "r000", "text": text}, "annotations": [annotation([region])]}])
    with pytest.raises(ReviewError, match=r"task 8 \(id 'nope'\): no labelled row has this id"):
        attempt([{"id": 8, "data": {"id": "nope", "text": "x"}, "annotations": []}])
    with pytest.raises(ReviewError, match="tasks 1 and 2 are both row 'r000'"):
        attempt([{"id": n, "data": {"id": "r000", "text": text}, "annotations": []} for n in (1, 2)])
    with pytest.raises(ReviewError, match="task 3 has no data.id"):
        attempt([{"id": 3, "data": {"text": text}, "annotations": []}])
    with pytest.raises(ReviewError, match=r"a 'choices' result of 'label', expected 'labels'"):
        attempt([{"id": 4, "data": {"id": "r000", "text": text}, "annotations": [annotation(
            [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["PER"]}}])]}])


@pytest.mark.parametrize("task_type", TYPES)
def test_the_task_types_own_schema_and_gold_loader(task_type, tmp_path):
    """Rows in the labelling job's own schema (pipeline/tasks) export; the gold rows import writes are
    what the task type's gold loader reads, and the teacher's rows equal its teacher_targets."""
    from pipeline import tasks

    cfg = config(tmp_path, task_type)
    kind = tasks.get(cfg.task, samples=4)
    real = kind.labelled_schema()
    defaults = {pa.types.is_integer: 0, pa.types.is_boolean: False, pa.types.is_string: "-"}
    rows = labelled_rows(task_type, CONSISTENCY, ABSTAIN)
    for row in rows:
        for field in real:
            if field.name not in row:
                default = next((v for test, v in defaults.items() if test(field.type)), None)
                row[field.name] = None if field.nullable else default
    table = pa.Table.from_pylist(rows, schema=real)
    (tmp_path / "labels" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "labels" / "data" / "part-0.parquet")
    export_review(cfg, str(tmp_path / "review"))
    exported, _, _ = read_export(tmp_path / "review")
    reviewed = "r005"
    (tmp_path / "e.json").write_text(json.dumps(ls_export(exported, {reviewed: [annotation(reviewer_result(
        task_type, CHANGED[task_type], rows[5]["text"]))]})))
    import_review(cfg, str(tmp_path / "e.json"), str(tmp_path / "gold.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "gold.jsonl").read_text().splitlines()]
    field = FIELD[task_type]
    assert kind.gold_targets(records, "gold") == [record[field] for record in records]
    teacher = dict(zip(table["id"].to_pylist(), kind.teacher_targets(table)))
    for record in records:
        assert record[field] == (CHANGED[task_type] if record["id"] == reviewed else teacher[record["id"]])


def test_review_through_s3(tmp_path, s3_bucket, s3_endpoint, monkeypatch):
    """Labels, review folder and gold file on S3 (moto's server): the round trip without local files."""
    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    rows = labelled_rows("classification", CONSISTENCY, ABSTAIN)
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema("classification")),
                   f"{s3_bucket}/labels/data/p.parquet", filesystem=fs)
    cfg = config(tmp_path, "classification", labels=f"s3://{s3_bucket}/labels")
    export_review(cfg, f"s3://{s3_bucket}/review", limit=3)
    with fs.open_input_stream(f"{s3_bucket}/review/tasks.json") as stream:
        tasks = json.loads(stream.read())
    assert [task["data"]["id"] for task in tasks] == ORDER[:3]
    with fs.open_output_stream(f"{s3_bucket}/review/ls-export.json") as out:
        out.write(json.dumps(ls_export(tasks, {"r005": [annotation(reviewer_result(
            "classification", "neutral", rows[5]["text"]))]})).encode())
    report = import_review(cfg, f"s3://{s3_bucket}/review/ls-export.json",
                           f"s3://{s3_bucket}/gold/gold.jsonl")
    assert (report["reviewed"], report["kept_teacher"], report["left_out_abstained"]) == (1, 0, 2)
    with fs.open_input_stream(f"{s3_bucket}/gold/gold.jsonl") as stream:
        assert json.loads(stream.read()) == {"id": "r005", "text": rows[5]["text"], "label": "neutral",
                                             "source": "review"}


def test_cli_export_and_import(tmp_path, capsys):
    import yaml

    from pipeline.cli import main

    cfg = config(tmp_path, "classification")
    write_labels(tmp_path / "labels", "classification", labelled_rows("classification", CONSISTENCY, ABSTAIN))
    raw = {"task": {"name": cfg.task.name, "instruction": cfg.task.instruction, "type": "classification",
                    "labels": [{"name": label.name, "description": label.description}
                               for label in cfg.task.labels]},
           "teacher": {"model": "tiny-teacher"}, "data": {"input": cfg.data.input, "output": cfg.data.output}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["export-review", str(tmp_path / "c.yaml"), str(tmp_path / "review"), "--limit", "4"]) == 0
    assert "exported 4 classification rows for review" in capsys.readouterr().out
    tasks = json.loads((tmp_path / "review" / "tasks.json").read_text())
    (tmp_path / "e.json").write_text(json.dumps(ls_export(tasks, {"r005": [annotation(reviewer_result(
        "classification", "furious", "x"))]})))
    command = ["import-review", str(tmp_path / "c.yaml"), str(tmp_path / "e.json"), str(tmp_path / "g.jsonl")]
    assert main(command) == 1
    assert "error: Label Studio task 102 (id 'r005'): label 'furious'" in capsys.readouterr().err
    (tmp_path / "e.json").write_text(json.dumps(ls_export(tasks, {})))
    assert main([*command, "--labels", str(tmp_path / "labels")]) == 0
    assert "wrote 2 gold rows" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """One Label Studio server for the module (about 15 s to start from the migrated template)."""
    if not ls.wait_for_install():
        if os.environ.get("RAYDISTILL_REQUIRE_LABEL_STUDIO"):  # make test / CI: never skipped there
            pytest.fail(f"Label Studio did not install in {ls.LS_VENV}:\n{ls.install_log_tail()}")
        pytest.skip(f"Label Studio is not installed in {ls.LS_VENV}: run scripts/install_labelstudio.sh "
                    "(`make test` does)")
    with ls.LabelStudioServer(tmp_path_factory.mktemp("label-studio")) as server:
        print(f"\nLabel Studio ready on {server.url} in {server.start_seconds:.1f}s")
        yield server


@pytest.mark.parametrize("task_type", TYPES)
def test_round_trip_through_label_studio(label_studio, task_type, tmp_path):
    """Export, create a project with our labelling config, import our tasks with the teacher's
    predictions, review two tasks through the API (one changed, one out-of-set), export the
    project, import the review."""
    began = time.monotonic()
    rows = {row["id"]: row for row in labelled_rows(task_type, CONSISTENCY, ABSTAIN)}
    write_labels(tmp_path / "labels", task_type, list(rows.values()))
    cfg = config(tmp_path, task_type)
    export_review(cfg, str(tmp_path / "review"), limit=8)
    tasks, _, _ = read_export(tmp_path / "review")

    api = label_studio.api()
    project = api.create_project(f"raydistill review: {task_type}",  # 3 to 50 characters
                                 (tmp_path / "review" / "label_config.xml").read_text())
    imported = api.import_tasks(project, tasks)
    assert (imported["task_count"], imported["prediction_count"]) == (8, 6)
    by_row = {task["data"]["id"]: task["id"] for task in api.tasks(project)}
    assert list(by_row) == ORDER[:8]  # Label Studio keeps the import order

    changed = "r005"
    api.annotate(by_row[changed], reviewer_result(task_type, CHANGED[task_type], rows[changed]["text"]))
    api.annotate(by_row["r001"], [], cancelled=True)  # skipped: keeps the teacher's
    export = api.export(project)
    (tmp_path / "ls-export.json").write_text(json.dumps(export))
    # Label Studio's export names each task's predictions by id only.
    assert all(isinstance(p, int) for task in export for p in task["predictions"])

    report = import_review(cfg, str(tmp_path / "ls-export.json"), str(tmp_path / "gold.jsonl"))
    gold = read_gold(tmp_path / "gold.jsonl")
    field = FIELD[task_type]
    assert (report["tasks"], report["reviewed"], report["changed_by_reviewer"]) == (8, 1, 1)
    assert (report["kept_teacher"], report["left_out_abstained"]) == (5, 2)
    assert gold[changed] == {"id": changed, "text": rows[changed]["text"], field: CHANGED[task_type],
                             "source": "review"}
    for row_id in set(gold) - {changed}:
        assert gold[row_id][field] == teacher_gold(task_type, rows[row_id])
        assert gold[row_id]["source"] == "teacher"

    # Label Studio stores a label outside the project's config without complaint; the import refuses it.
    furious = {"classification": "furious", "multilabel": ["furious"],
               "spans": [{"start": 0, "end": 3, "label": "furious"}]}[task_type]
    api.annotate(by_row["r008"], reviewer_result(task_type, furious, rows["r008"]["text"]))
    (tmp_path / "ls-export.json").write_text(json.dumps(api.export(project)))
    task_r008 = by_row["r008"]
    with pytest.raises(ReviewError, match=rf"Label Studio task {task_r008} \(id 'r008'\): label 'furious'"):
        import_review(cfg, str(tmp_path / "ls-export.json"), str(tmp_path / "gold2.jsonl"))
    print(f"\n{task_type}: round trip through Label Studio in {time.monotonic() - began:.1f}s")
