"""``classification``: one class per text, the WWW'23 setting.

Prompt: the instruction and the classes with their descriptions; each demo
reasons, then ends with ``Answer: <label>``. Parser: :mod:`pipeline.answers`
(exactly one label named, or an abstention). Votes: :mod:`pipeline.votes`
(majority label, vote fractions, majority share as consistency). Student: a
sequence classifier with a softmax head, trained with :mod:`pipeline.losses`
(``cls`` on the hard label, ``rgr``/``kl`` on the vote fractions). Metrics:
:mod:`pipeline.metrics` (per-class precision/recall/F1, confusion matrix,
recall at a target precision).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import prompts, schemas
from pipeline.answers import parse_answer
from pipeline.config import ABSTAIN, Demo
from pipeline.errors import ConfigError
from pipeline.selection import DEFAULT_MIN_CONSISTENCY
from pipeline.tasks.base import TaskType, object_array
from pipeline.votes import aggregate_votes


class Classification(TaskType):
    name = "classification"
    modes = ("cls", "rgr", "kl")
    default_min_consistency = DEFAULT_MIN_CONSISTENCY

    def __init__(self, task, samples: int = 1):
        super().__init__(task, samples)
        self.target_precision = 0.8  # the deployment metric's precision (distill.target_precision)

    def check(self) -> None:
        for i, demo in enumerate(self.task.demos):
            if not demo.label:
                raise ConfigError(f"task.demos[{i}].label: required key is missing (a classification demo's answer)")
            if demo.label not in self.label_names:
                raise ConfigError(f"task.demos[{i}].label: {demo.label!r} is not one of {self.label_names}")

    # ---------------------------------------------------------------- teacher
    def system_message(self) -> str:
        return prompts.system_message(self.task)

    def demo_answer(self, demo: Demo) -> str:
        return prompts.assistant_message(demo.rationale, demo.label)

    def parse(self, completion: str, text: str) -> Optional[str]:
        return parse_answer(completion, self.label_names)

    def vote(self, parsed: Optional[str]) -> str:
        return ABSTAIN if parsed is None else parsed

    def aggregate(self, parsed: list[Optional[str]], completions: list[str], text: str) -> dict[str, Any]:
        votes = [self.vote(p) for p in parsed]
        result = aggregate_votes(votes, self.label_names)
        rationale = None
        if result.hard_label is not None:
            rationale = completions[votes.index(result.hard_label)].strip()
        return {"hard_label": result.hard_label, "soft_label": result.soft_label,
                "consistency": result.consistency, "n_valid": result.n_valid, "rationale": rationale}

    def label_fields(self) -> list[pa.Field]:
        return schemas.CLASSIFICATION_LABELS

    def label_counts(self, table: pa.Table) -> dict[str, int]:
        counts = pc.value_counts(table.column("hard_label").drop_null()).to_pylist()
        return {item["values"]: item["counts"] for item in counts}

    def check_labelled(self, table: pa.Table, where: str) -> None:
        from pipeline.distill import LabelDataError

        hard = table.column("hard_label")
        bad = pc.and_(pc.is_valid(hard), pc.invert(pc.is_in(hard, value_set=pa.array(self.label_names))))
        if pc.any(bad).as_py():
            row = table.filter(bad).slice(0, 1).to_pylist()[0]
            raise LabelDataError(f"distill.labels: row id {row['id']!r} in {where} has hard_label "
                                 f"{row['hard_label']!r}, not one of {self.label_names}")
        lengths = pc.list_value_length(table.column("soft_label"))
        wrong = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, len(self.label_names)))
        if pc.any(wrong).as_py():
            row = table.filter(wrong).slice(0, 1).to_pylist()[0]
            raise LabelDataError(f"distill.labels: row id {row['id']!r} in {where} has a soft_label of length "
                                 f"{len(row['soft_label'])}, expected {len(self.label_names)} (one per label)")

    # ---------------------------------------------------------------- student
    def load_student(self, model: str) -> tuple[Any, Any]:
        from pipeline.student import load_student

        return load_student(model, self.label_names)

    def train_rows(self, rows: pa.Table) -> dict[str, np.ndarray]:
        index = {name: i for i, name in enumerate(self.label_names)}
        soft = rows.column("soft_label").to_pylist()
        return {
            "text": object_array(rows.column("text").to_pylist()),
            "hard": np.array([index[h] for h in rows.column("hard_label").to_pylist()], dtype=np.int64),
            "soft": np.array(soft, dtype=np.float32).reshape(len(soft), len(index)),
        }

    def collate(self, tokenizer: Any, batch: dict[str, np.ndarray], max_length: int) -> dict[str, Any]:
        import torch

        from pipeline.student import tokenize

        encoded = tokenize(tokenizer, [str(t) for t in batch["text"]], max_length)
        return {**{k: torch.from_numpy(v) for k, v in encoded.items()},
                "hard": torch.as_tensor(batch["hard"]), "soft": torch.as_tensor(np.asarray(batch["soft"]))}

    def loss(self, model: Any, batch: dict[str, Any], mode: str) -> Any:
        from pipeline.losses import distill_loss

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return distill_loss(logits.float(), mode, batch["hard"], batch["soft"])

    # ---------------------------------------------------------------- gold, metrics, prediction
    def gold_targets(self, records: list[dict[str, Any]], where: str) -> list[Any]:
        from pipeline.evaluate import GoldSetError

        known = set(self.label_names)
        for number, record in enumerate(records, 1):
            if record.get("label") not in known:
                raise GoldSetError(f"{where} row {number} (id {record.get('id')!r}) has label "
                                   f"{record.get('label')!r}, not one of the config's labels")
        return [record["label"] for record in records]

    def teacher_targets(self, table: pa.Table) -> list[Any]:
        return table.column("hard_label").to_pylist()

    def predict(self, model: Any, tokenizer: Any, texts: list[str], max_length: int,
                batch_size: int = 64) -> dict[str, list[Any]]:
        from pipeline.student import predict_proba

        probabilities = predict_proba(model, tokenizer, texts, max_length, batch_size)
        return {"label": [self.label_names[i] for i in probabilities.argmax(axis=1)] if len(texts) else [],
                "probabilities": probabilities.astype("float32").tolist()}

    def prediction_fields(self) -> list[pa.Field]:
        return [pa.field("label", pa.string()), pa.field("probabilities", pa.list_(pa.float32()))]

    def prediction_counts(self, table: pa.Table) -> dict[str, int]:
        counts = pc.value_counts(table.column("label")).to_pylist()
        return {item["values"]: item["counts"] for item in counts}

    def evaluate(self, targets: list[Any], predictions: dict[str, list[Any]]) -> dict[str, Any]:
        from pipeline.metrics import classification_report

        index = {name: i for i, name in enumerate(self.label_names)}
        probabilities = np.array(predictions["probabilities"], dtype=float).reshape(len(targets), len(index))
        report = classification_report(np.array([index[t] for t in targets], dtype=np.int64), probabilities,
                                       self.label_names, self.target_precision)
        report["headline"] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        return report

    def agreement(self, targets: list[Any], predictions: dict[str, list[Any]]) -> np.ndarray:
        return np.array([p == t for t, p in zip(targets, predictions["label"]) if t is not None], dtype=bool)

    def evaluation_rows(self, texts: list[str], targets: list[Any], predictions: dict[str, list[Any]]) -> pa.Table:
        from pipeline.evaluate import predictions_table

        index = {name: i for i, name in enumerate(self.label_names)}
        probabilities = np.array(predictions["probabilities"], dtype=float).reshape(len(texts), len(index))
        return predictions_table(texts, [index[t] for t in targets], probabilities, self.label_names)

    def plots(self, report: dict[str, Any]) -> dict[str, bytes]:
        from pipeline.evaluate import confusion_png, pr_png

        return {"confusion": confusion_png(report), "pr": pr_png(report)}

    def format_evaluation(self, name: str, report: dict[str, Any]) -> str:
        from pipeline.evaluate import format_evaluation

        return format_evaluation(name, report)
