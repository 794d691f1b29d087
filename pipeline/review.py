"""Human review of the teacher's labels in Label Studio: export the most uncertain rows as tasks with
the teacher's answers as pre-annotations, import the reviewed annotations back as a gold set.

Export (``raydistill export-review``) writes three files to its output folder (local or s3://)::

    tasks.json          Label Studio tasks: {"data": {"id", "text"}, "predictions": [the teacher's]}
    label_config.xml    the labelling interface matching the task type and label set
    manifest.json       rows exported, the sort, the limit, the labels, the task type

Rows go out in order of the teacher's uncertainty: abstentions (``n_valid == 0``, no prediction)
first, then lowest ``consistency`` first, ties by ``id``. The corpus never reaches the driver: a
first pass streams ``id``, ``consistency`` and ``n_valid`` file by file and keeps only the ``limit``
most uncertain; a second pass fetches those rows' texts and labels.

Import (``raydistill import-review``) reads Label Studio's JSON export and writes one jsonl gold
file (``id``, ``text``, the task type's gold field, ``source``): a task with a submitted annotation
(the latest one not cancelled) gives the reviewer's labels (``source: review``), any other task the
teacher's (``source: teacher``), read from the labelled parquet.

Everything that depends on the task type (the labelling config, a row as Label Studio results, an
annotation as a gold value) lives in one :class:`ReviewFormat` per type, found in :data:`FORMATS`.
"""

from __future__ import annotations

import abc
import functools
import json
from typing import Any, Callable, Iterator, Optional
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import prompts, storage
from pipeline.config import Config, TaskConfig
from pipeline.errors import ConfigError
from pipeline.schemas import SchemaError

# Label Studio imports tasks as one JSON list, parsed whole in its server's memory: beyond this many
# rows an export needs --limit.
MAX_TASKS = 100_000
SORT = "abstained rows (n_valid 0) first, then consistency ascending, ties by id ascending"
# Names of the labelling config's object and control tags, referred to by every result.
TEXT_TAG = "text"
CONTROL_TAG = "label"
BATCH_ROWS = 65_536


class ReviewError(ValueError):
    """A Label Studio export cannot be read back: a label outside the label set, a malformed result,
    a task that names no labelled row. The message names the Label Studio task and the row id."""


# ---------------------------------------------------------------------------------- task types
class ReviewFormat(abc.ABC):
    """How one task type looks in Label Studio: its labelling config, the teacher's answer as
    pre-annotation results, and a reviewer's annotation read back as a gold value."""

    task_type: str = ""
    columns: tuple[str, ...] = ()  # the labelled row's columns holding the teacher's result
    gold_field: str = ""  # the gold set's field: label | labels | spans

    def __init__(self, label_names: list[str]):
        self.label_names = list(label_names)

    @abc.abstractmethod
    def label_config(self) -> str:
        """The ``<View>`` XML of the labelling interface."""

    @abc.abstractmethod
    def teacher_target(self, row: dict[str, Any]) -> Any:
        """The teacher's answer of a labelled row as a gold value; None when the row abstained."""

    @abc.abstractmethod
    def prediction(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The teacher's answer of a labelled row (not an abstention) as Label Studio results."""

    @abc.abstractmethod
    def target(self, results: list[dict[str, Any]], text: str, where: str) -> Any:
        """The gold value of an annotation's results; raises :class:`ReviewError` naming ``where``."""

    def _check_label(self, label: Any, where: str) -> str:
        if label not in self.label_names:
            raise ReviewError(f"{where}: label {label!r} is not one of the config's labels "
                              f"{self.label_names}; was the project's labelling config edited?")
        return label

    def _values(self, results: list[dict[str, Any]], result_type: str,
                where: str) -> Iterator[dict[str, Any]]:
        """The ``value`` of each result of our control, of the type this format writes."""
        for result in results:
            if result.get("from_name") != CONTROL_TAG:
                continue  # another control a user added to the interface (a comment box, ...)
            if result.get("type") != result_type:
                raise ReviewError(f"{where}: a {result.get('type')!r} result of {CONTROL_TAG!r}, expected "
                                  f"{result_type!r}; the project's labelling config is not the one "
                                  "export-review wrote")
            yield result.get("value") or {}


def _choices(result_type: str, choices: list[str]) -> dict[str, Any]:
    return {"from_name": CONTROL_TAG, "to_name": TEXT_TAG, "type": result_type, "value": {"choices": choices}}


class ClassificationReview(ReviewFormat):
    task_type = "classification"
    columns = ("hard_label",)
    gold_field = "label"

    def label_config(self) -> str:
        return _view(f'<Choices name="{CONTROL_TAG}" toName="{TEXT_TAG}" choice="single" required="true">',
                     [f"<Choice value={quoteattr(name)}/>" for name in self.label_names], "</Choices>",
                     text_first=True)

    def teacher_target(self, row: dict[str, Any]) -> Optional[str]:
        return row["hard_label"] if row["n_valid"] > 0 else None

    def prediction(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return [_choices("choices", [row["hard_label"]])]

    def target(self, results: list[dict[str, Any]], text: str, where: str) -> str:
        chosen = [label for value in self._values(results, "choices", where)
                  for label in value.get("choices", [])]
        if len(chosen) != 1:
            raise ReviewError(f"{where}: the annotation chooses {len(chosen)} labels {chosen}, expected one")
        return self._check_label(chosen[0], where)


class MultilabelReview(ReviewFormat):
    task_type = "multilabel"
    columns = ("labels",)
    gold_field = "labels"

    def label_config(self) -> str:
        return _view(f'<Choices name="{CONTROL_TAG}" toName="{TEXT_TAG}" choice="multiple">',
                     [f"<Choice value={quoteattr(name)}/>" for name in self.label_names], "</Choices>",
                     text_first=True)

    def _ordered(self, labels: set[str]) -> list[str]:
        return [name for name in self.label_names if name in labels]

    def teacher_target(self, row: dict[str, Any]) -> Optional[list[str]]:
        if row["n_valid"] == 0 or row["labels"] is None:
            return None
        return self._ordered(set(row["labels"]))

    def prediction(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        # No label on: no result at all (Label Studio shows the prediction with nothing chosen).
        on = self._ordered(set(row["labels"]))
        return [_choices("choices", on)] if on else []

    def target(self, results: list[dict[str, Any]], text: str, where: str) -> list[str]:
        chosen = {self._check_label(label, where)
                  for value in self._values(results, "choices", where) for label in value.get("choices", [])}
        return self._ordered(chosen)


class SpansReview(ReviewFormat):
    task_type = "spans"
    columns = ("spans",)
    gold_field = "spans"

    def label_config(self) -> str:
        return _view(f'<Labels name="{CONTROL_TAG}" toName="{TEXT_TAG}">',
                     [f"<Label value={quoteattr(name)}/>" for name in self.label_names], "</Labels>",
                     text_first=False)

    @staticmethod
    def _sorted(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(spans, key=lambda s: (s["start"], s["end"], s["label"]))

    def teacher_target(self, row: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
        if row["n_valid"] == 0 or row["spans"] is None:
            return None
        return self._sorted([{"start": s["start"], "end": s["end"], "label": s["label"]}
                             for s in row["spans"]])

    def prediction(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        text = row["text"]
        return [
            {"id": f"teacher-{i}", "from_name": CONTROL_TAG, "to_name": TEXT_TAG, "type": "labels",
             "value": {"start": s["start"], "end": s["end"], "text": text[s["start"]:s["end"]],
                       "labels": [s["label"]]},
             "score": s["score"]}
            for i, s in enumerate(self._sorted(list(row["spans"])))
        ]

    def target(self, results: list[dict[str, Any]], text: str, where: str) -> list[dict[str, Any]]:
        spans = []
        for value in self._values(results, "labels", where):
            start, end = value.get("start"), value.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
                raise ReviewError(f"{where}: a region at {start}..{end} is not a span of the text "
                                  f"({len(text)} characters)")
            for label in value.get("labels", []):
                spans.append({"start": start, "end": end, "label": self._check_label(label, where)})
        return self._sorted(spans)


FORMATS: dict[str, type[ReviewFormat]] = {
    cls.task_type: cls for cls in (ClassificationReview, MultilabelReview, SpansReview)
}


def review_format(task: TaskConfig) -> ReviewFormat:
    """The review format of ``task.type``."""
    if task.type not in FORMATS:
        raise ConfigError(f"task.type: review supports {', '.join(FORMATS)}, got {task.type!r}")
    return FORMATS[task.type](task.label_names)


def _view(open_tag: str, items: list[str], close_tag: str, text_first: bool) -> str:
    """A ``<View>`` with the text and one control. Span labels go above the text, as in Label
    Studio's own NER template; choices below it."""
    text = f'  <Text name="{TEXT_TAG}" value="${TEXT_TAG}"/>'
    control = "\n".join([f"  {open_tag}", *(f"    {item}" for item in items), f"  {close_tag}"])
    body = [text, control] if text_first else [control, text]
    return "\n".join(["<View>", *body, "</View>", ""])


# ---------------------------------------------------------------------------------- labelled rows
def _labelled_files(config: Config, labels_uri: Optional[str]) -> tuple[pafs.FileSystem, list[str], str]:
    uri = labels_uri or config.data.output
    fs, root = storage.resolve(uri, config.storage)
    files = storage.list_files(fs, storage.join(root, "data"), (".parquet",))
    if not files:
        raise ConfigError(f"{'--labels' if labels_uri else 'data.output'}: no labelled parquet files under "
                          f"{storage.join(uri.rstrip('/'), 'data')}")
    return fs, files, uri


def _batches(fs: pafs.FileSystem, file: str, columns: list[str],
             optional: tuple[str, ...] = ()) -> Iterator[pa.RecordBatch]:
    """``file`` in batches of ``columns`` and those of ``optional`` it has."""
    with storage.retried(fs, lambda: fs.open_input_file(file), f"opening {file}") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        missing = [name for name in columns if name not in names]
        if missing:
            raise SchemaError(f"{file}: labelled rows lack the column(s) {missing} (columns: {names})")
        present = columns + [name for name in optional if name in names]
        yield from parquet.iter_batches(columns=present, batch_size=BATCH_ROWS)


_RANK_SORT = [("answered", "ascending"), ("consistency", "ascending"), ("id", "ascending")]


def _ranked(batch: pa.RecordBatch) -> pa.Table:
    """``id``, ``answered`` (False for an abstention: those sort first) and ``consistency``."""
    return pa.table({"id": batch.column("id"),
                     "answered": pc.greater(batch.column("n_valid"), 0),
                     "consistency": batch.column("consistency")})


def _before(table: pa.Table, worst: dict[str, Any]) -> pa.Array:
    """Rows of ``table`` that sort before ``worst`` under the review order."""
    answered = pc.cast(table["answered"], pa.int8())
    worst_answered = int(worst["answered"])
    same_answered = pc.equal(answered, worst_answered)
    same_consistency = pc.equal(table["consistency"], worst["consistency"])
    same_consistency_lower_id = pc.and_(same_consistency, pc.less(table["id"], worst["id"]))
    earlier_in_group = pc.or_(pc.less(table["consistency"], worst["consistency"]), same_consistency_lower_id)
    return pc.or_(pc.less(answered, worst_answered), pc.and_(same_answered, earlier_in_group))


def most_uncertain(fs: pafs.FileSystem, files: list[str], limit: int) -> pa.Table:
    """The ``limit`` rows that sort first (:data:`SORT`): ``id``, ``answered``, ``consistency``.

    Streams the files in batches of :data:`BATCH_ROWS` rows, keeping at most ``limit`` rows: a batch
    is first cut to the rows that beat the current last one, so once the kept set has settled most
    batches cost one vectorised comparison.
    """
    kept: Optional[pa.Table] = None
    for file in files:
        for batch in _batches(fs, file, ["id", "consistency", "n_valid"]):
            table = _ranked(batch)
            if kept is not None and kept.num_rows == limit:
                table = table.filter(_before(table, kept.slice(limit - 1).to_pylist()[0]))
                if table.num_rows == 0:
                    continue
            merged = table if kept is None else pa.concat_tables([kept, table])
            kept = merged.take(pc.sort_indices(merged, sort_keys=_RANK_SORT)[:limit])
    assert kept is not None  # files is not empty
    return kept


def fetch_rows(fs: pafs.FileSystem, files: list[str], ids: list[str], columns: list[str],
               optional: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The rows with these ids (``columns``, and those of ``optional`` a file has), by id: one more
    pass over the files, keeping only them."""
    wanted = pa.array(ids, pa.string())
    found: dict[str, dict[str, Any]] = {}
    for file in files:
        for batch in _batches(fs, file, columns, optional):
            table = pa.Table.from_batches([batch])
            for row in table.filter(pc.is_in(table["id"], value_set=wanted)).to_pylist():
                found.setdefault(row["id"], row)
    return found


PROVENANCE = ("teacher_model", "prompt_hash")  # the prediction's model_version; older outputs may lack them


def _count_rows(fs: pafs.FileSystem, files: list[str]) -> int:
    """Rows in ``files``, from their footers."""

    def count(file: str) -> int:
        with fs.open_input_file(file) as handle:
            return pq.read_metadata(handle).num_rows

    return sum(storage.retried(fs, lambda f=f: count(f), f"reading {f}") for f in files)


# ---------------------------------------------------------------------------------- export
def export_review(config: Config, output: str, limit: Optional[int] = None,
                  labels_uri: Optional[str] = None) -> dict[str, Any]:
    """Write the ``limit`` most uncertain labelled rows as Label Studio tasks (all rows when
    ``limit`` is None and there are at most :data:`MAX_TASKS`) to ``output``; return the manifest."""
    fmt = review_format(config.task)
    if limit is not None and not 0 < limit <= MAX_TASKS:
        raise ConfigError(f"--limit: must be between 1 and {MAX_TASKS:,} (Label Studio imports one JSON "
                          f"list), got {limit}")
    fs, files, uri = _labelled_files(config, labels_uri)
    if limit is None:
        total = _count_rows(fs, files)
        if total > MAX_TASKS:
            raise ConfigError(f"{uri} holds {total:,} labelled rows; Label Studio imports one JSON list, "
                              f"so an export without --limit stops at {MAX_TASKS:,}: pass --limit N to "
                              "export the N rows the teacher is least sure of")
    chosen = most_uncertain(fs, files, limit or MAX_TASKS)
    ids = chosen["id"].to_pylist()
    rows = fetch_rows(fs, files, ids, ["id", "text", "consistency", "n_valid", *fmt.columns], PROVENANCE)
    # for rows that do not record their teacher and prompt: the config's, computed once if needed
    config_version = functools.cache(lambda: f"{config.teacher.model}@{prompts.prompt_hash(config.task)}")
    tasks = [_task(fmt, rows[row_id], config_version) for row_id in ids]

    out_fs, out_root = storage.resolve(output, config.storage)
    storage.write_bytes_atomic(out_fs, storage.join(out_root, "tasks.json"),
                               json.dumps(tasks, ensure_ascii=False).encode("utf-8"))
    storage.write_bytes_atomic(out_fs, storage.join(out_root, "label_config.xml"),
                               fmt.label_config().encode("utf-8"))
    scores = [task["predictions"][0]["score"] for task in tasks if task["predictions"]]
    manifest = {
        "task": config.task.name,
        "task_type": fmt.task_type,
        "labels": fmt.label_names,
        "labels_uri": uri,
        "rows_exported": len(tasks),
        "abstained_exported": len(tasks) - len(scores),
        "limit": limit,
        "sort": SORT,
        "consistency_range": [min(scores), max(scores)] if scores else None,
        "model_versions": sorted({t["predictions"][0]["model_version"] for t in tasks if t["predictions"]}),
    }
    storage.write_json(out_fs, storage.join(out_root, "manifest.json"), manifest)
    return manifest


def _task(fmt: ReviewFormat, row: dict[str, Any], config_version: Callable[[], str]) -> dict[str, Any]:
    """One Label Studio task; the prediction's ``model_version`` is ``<teacher model>@<prompt hash>``."""
    task: dict[str, Any] = {"data": {"id": row["id"], "text": row["text"]}, "predictions": []}
    if fmt.teacher_target(row) is not None:
        recorded = row.get("teacher_model") and row.get("prompt_hash")
        version = f"{row['teacher_model']}@{row['prompt_hash']}" if recorded else config_version()
        task["predictions"].append({"model_version": version, "score": row["consistency"],
                                    "result": fmt.prediction(row)})
    return task


def format_export_report(manifest: dict[str, Any], output: str) -> str:
    scores = manifest["consistency_range"]
    spread = f"teacher consistency {scores[0]:.3f}..{scores[1]:.3f}" if scores else "no predictions"
    return (f"exported {manifest['rows_exported']} {manifest['task_type']} rows for review to "
            f"{output.rstrip('/')}/ ({manifest['abstained_exported']} abstentions without a prediction; "
            f"{spread}; limit {manifest['limit']})\n"
            f"  import tasks.json into a Label Studio project whose labelling config is label_config.xml")


# ---------------------------------------------------------------------------------- import
def latest_annotation(task: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The task's latest annotation not cancelled (skipped), or None."""
    submitted = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not submitted:
        return None
    return max(submitted, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0))


def import_review(config: Config, export_path: str, output: str,
                  labels_uri: Optional[str] = None) -> dict[str, Any]:
    """Gold rows from a Label Studio JSON export, written as jsonl to ``output``; returns the counts.

    Every task of the export gives one row: the reviewer's labels when it has a submitted
    annotation, else the teacher's. A task the teacher abstained on and nobody reviewed has no
    label and is left out (counted).
    """
    fmt = review_format(config.task)
    export_fs, export_file = storage.resolve(export_path, config.storage)
    tasks = storage.read_json(export_fs, export_file)
    if not isinstance(tasks, list):
        raise ReviewError(f"{export_path}: expected Label Studio's JSON export (a list of tasks), got "
                          f"{type(tasks).__name__}")
    task_of: dict[str, Any] = {}
    for number, task in enumerate(tasks):
        row_id = (task.get("data") or {}).get("id")
        if not isinstance(row_id, str):
            raise ReviewError(f"{export_path}: task {task.get('id', f'#{number}')} has no data.id; import "
                              "the tasks written by export-review")
        if row_id in task_of:
            raise ReviewError(f"{export_path}: tasks {task_of[row_id].get('id')} and {task.get('id')} are "
                              f"both row {row_id!r}; were the tasks imported twice?")
        task_of[row_id] = task

    fs, files, _ = _labelled_files(config, labels_uri)
    rows = fetch_rows(fs, files, list(task_of), ["id", "text", "n_valid", *fmt.columns])
    counts = {"tasks": len(tasks), "reviewed": 0, "kept_teacher": 0, "changed_by_reviewer": 0,
              "left_out_abstained": 0,
              "without_annotations": sum(not task.get("annotations") for task in tasks)}
    gold = []
    for row_id, task in task_of.items():
        where = f"Label Studio task {task.get('id')} (id {row_id!r})"
        if row_id not in rows:
            raise ReviewError(f"{where}: no labelled row has this id under the labels")
        row = rows[row_id]
        teacher = fmt.teacher_target(row)
        annotation = latest_annotation(task)
        if annotation is not None:
            target, source = fmt.target(annotation.get("result") or [], row["text"], where), "review"
            counts["reviewed"] += 1
            counts["changed_by_reviewer"] += target != teacher
        elif teacher is not None:
            target, source = teacher, "teacher"
            counts["kept_teacher"] += 1
        else:
            counts["left_out_abstained"] += 1
            continue
        gold.append({"id": row_id, "text": row["text"], fmt.gold_field: target, "source": source})

    out_fs, out_file = storage.resolve(output, config.storage)
    body = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in gold)
    storage.write_bytes_atomic(out_fs, out_file, body.encode("utf-8"))
    return {**counts, "gold_rows": len(gold), "output": output}


def format_import_report(report: dict[str, Any]) -> str:
    return (f"wrote {report['gold_rows']} gold rows to {report['output']} from {report['tasks']} tasks: "
            f"{report['reviewed']} reviewed ({report['changed_by_reviewer']} changed by the reviewer), "
            f"{report['kept_teacher']} kept the teacher's labels, {report['left_out_abstained']} left out "
            "(the teacher abstained and nobody reviewed them)"
            + ("" if report["without_annotations"] or not report["tasks"] else
               "\n  note: every task of the export has an annotation. Label Studio exports only annotated "
               "tasks unless asked for all (API: download_all_tasks=true): unreviewed tasks, if the project "
               "has any, are missing here instead of keeping the teacher's labels"))

