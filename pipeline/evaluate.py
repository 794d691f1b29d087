"""Evaluating a student: gold sets, metrics as JSON, plots as PNG, a printed table."""

from __future__ import annotations

import io
import json
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import StorageConfig


class GoldSetError(ValueError):
    """A gold set is missing, empty, or has labels outside the label set."""


def read_gold_records(uri: str, key: str, storage_config: StorageConfig) -> list[dict[str, Any]]:
    """The records of a gold set (jsonl or parquet files), each with a non-empty ``text``."""
    fs, path = storage.resolve(uri, storage_config)
    files = storage.list_files(fs, path, (".jsonl", ".json", ".parquet"))
    if not files:
        raise GoldSetError(f"{key}: no jsonl or parquet files at {uri}")
    records: list[dict[str, Any]] = []
    for file in files:
        if file.endswith(".parquet"):
            records += pq.read_table(file, filesystem=fs).to_pylist()
            continue
        with fs.open_input_stream(file) as stream:
            for number, line in enumerate(stream.read().decode("utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise GoldSetError(f"{key}: {file} line {number} is not JSON: {err.msg}") from err
    if not records:
        raise GoldSetError(f"{key}: {uri} is empty")
    for number, record in enumerate(records, 1):
        if not isinstance(record.get("text"), str) or not record["text"].strip():
            raise GoldSetError(f"{key}: {uri} row {number} (id {record.get('id')!r}) has no text")
    return records


def load_gold(uri: str, label_names: Sequence[str], key: str, storage_config: StorageConfig) -> tuple[list[str], list[int]]:
    """Texts and label indices of a classification gold set (jsonl or parquet with ``text`` and ``label``)."""
    records = read_gold_records(uri, key, storage_config)
    index = {name: i for i, name in enumerate(label_names)}
    for number, record in enumerate(records, 1):
        if record.get("label") not in index:
            raise GoldSetError(f"{key}: {uri} row {number} (id {record.get('id')!r}) has label "
                               f"{record.get('label')!r}, not one of the config's labels")
    return [record["text"] for record in records], [index[record["label"]] for record in records]


def load_task_gold(uri: str, kind: Any, key: str, storage_config: StorageConfig) -> tuple[list[str], list[Any]]:
    """Texts and references of a gold set of any task type (``label``, ``labels`` or ``spans``, as
    :meth:`~pipeline.tasks.base.TaskType.gold_targets` reads them)."""
    records = read_gold_records(uri, key, storage_config)
    return [record["text"] for record in records], kind.gold_targets(records, f"{key}: {uri}")


def evaluate(kind: Any, model: Any, tokenizer: Any, texts: list[str], targets: list[Any],
             max_length: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The task type's metrics report and the student's predictions (its prediction columns) for ``texts``."""
    predictions = kind.predict(model, tokenizer, texts, max_length)
    return kind.evaluate(targets, predictions), predictions


PREDICTIONS = pa.schema([
    pa.field("row", pa.int64(), nullable=False),  # 1-based row of the gold set, as in its error messages
    pa.field("text", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),  # gold
    pa.field("predicted", pa.string(), nullable=False),
    pa.field("confidence", pa.float64(), nullable=False),  # probability of the predicted label
])


def predictions_table(texts: list[str], labels: list[int], probabilities: np.ndarray,
                      label_names: Sequence[str]) -> pa.Table:
    predicted = probabilities.argmax(axis=1) if len(texts) else np.zeros(0, dtype=int)
    return pa.Table.from_pydict({
        "row": list(range(1, len(texts) + 1)),
        "text": texts,
        "label": [label_names[i] for i in labels],
        "predicted": [label_names[i] for i in predicted],
        "confidence": probabilities.max(axis=1).astype(float).tolist() if len(texts) else [],
    }, schema=PREDICTIONS)


def write_evaluation(fs: Any, folder: str, name: str, report: dict[str, Any], predictions: pa.Table,
                     plots: dict[str, bytes]) -> None:
    """``<name>.json``, ``<name>_predictions.parquet`` (one row per example, for error
    analysis and the error-extrapolation rounds) and the task type's plots (``<name>_confusion.png``,
    ``<name>_pr.png`` for classification) under ``folder``."""
    storage.write_json(fs, storage.join(folder, f"{name}.json"), report)
    storage.write_parquet_atomic(fs, storage.join(folder, f"{name}_predictions.parquet"), predictions)
    for suffix, png in plots.items():
        storage.write_bytes_atomic(fs, storage.join(folder, f"{name}_{suffix}.png"), png)


def confusion_png(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix, labels = np.array(report["confusion_matrix"]), report["labels"]
    size = max(4.0, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if len(labels) > 10 else 9)
    ax.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 10 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 12:
        for (i, j), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    return _png(fig)


def pr_png(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, curve in list(report["pr_curves"].items())[:12]:
        ax.plot(curve["recall"], curve["precision"], label=name)
    ax.axhline(report["target_precision"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("precision-recall, one vs rest")
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def format_evaluation(name: str, report: dict[str, Any]) -> str:
    target = report["target_precision"]
    key = f"recall_at_precision_{target}"
    lines = [
        f"{name}: {report['examples']} examples, accuracy {report['accuracy']:.3f}, "
        f"macro-F1 {report['macro_f1']:.3f}",
        f"  {'label':<24}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}{f'R@P{target}':>10}{'thresh':>8}",
    ]
    for label, scores in report["per_class"].items():
        at = scores[key]
        threshold = "-" if at["threshold"] is None else f"{at['threshold']:.2f}"
        lines.append(
            f"  {label[:24]:<24}{scores['precision']:>10.3f}{scores['recall']:>8.3f}{scores['f1']:>8.3f}"
            f"{scores['support']:>9}{at['recall']:>10.3f}{threshold:>8}"
        )
    return "\n".join(lines)
