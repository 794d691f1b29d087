"""What a task type is: the one place that knows its prompt, answers, votes, columns, student and metrics.

The stages (labelling, distillation, prediction, evaluation, reports, review) never ask which type a
task is: they call the methods of its :class:`TaskType`. A type is built from the task's config and
the teacher's sample count (``teacher.samples``), which its vote rules read:
``tasks.for_config(config)`` or ``tasks.get(task, samples)`` (:mod:`pipeline.tasks`).

Columns every labelled row has, whatever the type (:func:`pipeline.schemas.labelled_schema`): ``id``,
``text``, ``votes`` (one canonical string per sample, :data:`~pipeline.config.ABSTAIN` for an answer that
parsed to nothing), then the type's own columns (:meth:`TaskType.label_fields`), then
``consistency`` (how much the k samples agree, 0..1, 0 for an abstention), ``n_valid`` (samples that
parsed), ``rationale`` (one sample that agrees with the result), and the token and provenance columns.
A row *abstains* when ``n_valid == 0``.
"""

from __future__ import annotations

import abc
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from pipeline import schemas
from pipeline.config import Demo, TaskConfig

def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (texts, JSON strings) for training rows: Ray Data carries it as
    it is, where ``np.array`` could read a list of lists as a matrix."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


class TaskType(abc.ABC):
    """One task type. Subclasses set ``name`` and ``modes`` and implement every abstract method."""

    name: str = ""
    modes: tuple[str, ...] = ("cls",)  # distill.mode values this type trains with
    # distill.min_consistency when the config leaves it unset, per mode
    default_min_consistency: dict[str, float] = {"cls": 0.0}

    def __init__(self, task: TaskConfig, samples: int = 1):
        self.task = task
        self.label_names: list[str] = task.label_names
        self.samples = samples  # teacher.samples: k answers per text

    # ---------------------------------------------------------------- config
    def check(self) -> None:
        """Raise ConfigError naming the key (``task.demos[1].entities[0].type``) of anything this type
        cannot work with (its demos, its thresholds)."""

    # ---------------------------------------------------------------- teacher
    @abc.abstractmethod
    def system_message(self) -> str:
        """The system turn: instruction, label set, answer format, the text-is-data warning."""

    @abc.abstractmethod
    def demo_answer(self, demo: Demo) -> str:
        """The assistant turn of one demo: its reasoning, then its answer in this type's format."""

    @abc.abstractmethod
    def parse(self, completion: str, text: str) -> Optional[Any]:
        """One sample's answer, or None (an abstention). Never returns a label outside the label set."""

    @abc.abstractmethod
    def vote(self, parsed: Optional[Any]) -> str:
        """The canonical string of a parsed answer for the ``votes`` column (ABSTAIN for None)."""

    @abc.abstractmethod
    def aggregate(self, parsed: list[Optional[Any]], completions: list[str], text: str) -> dict[str, Any]:
        """One row's columns from its k parsed samples: the type's own columns, ``consistency``,
        ``n_valid`` and ``rationale``."""

    @abc.abstractmethod
    def label_fields(self) -> list[pa.Field]:
        """The type's own columns of a labelled row, in order."""

    def labelled_schema(self) -> pa.Schema:
        return schemas.labelled_schema(self.label_fields())

    def smoke_answers(self) -> list[str]:
        """Strings (one token each) the tiny random smoke teacher favours, so that its noise holds
        answers this type parses (smoke mode and tests; :func:`pipeline.smoke.build_tiny_teacher`)."""
        from pipeline.smoke import classification_answer_tokens

        return classification_answer_tokens(self.label_names)

    @abc.abstractmethod
    def label_counts(self, table: pa.Table) -> dict[str, int]:
        """Label distribution of labelled rows (classes, labels switched on, or entity types)."""

    def answer_counts(self, table: pa.Table) -> dict[str, int]:
        """Counts over labelled rows of what the parser left out of the answers (for the report), e.g.
        entities of a type outside the label set; empty when the type leaves nothing out."""
        return {}

    @abc.abstractmethod
    def check_labelled(self, table: pa.Table, where: str) -> None:
        """Raise ``LabelDataError`` naming the row if ``table`` (the type's columns and ``id``) holds a
        label outside the label set or a malformed value."""

    # ---------------------------------------------------------------- student
    @abc.abstractmethod
    def load_student(self, model: str) -> tuple[Any, Any]:
        """Tokenizer and model with this type's head (a fresh head when ``model`` has another)."""

    @abc.abstractmethod
    def train_rows(self, rows: pa.Table) -> dict[str, np.ndarray]:
        """Training rows for Ray Data from labelled rows already kept: ``text`` (object array) and the
        targets as arrays (plain values only: they travel through Ray Data to the train workers)."""

    @abc.abstractmethod
    def collate(self, tokenizer: Any, batch: dict[str, np.ndarray], max_length: int) -> dict[str, Any]:
        """Model inputs and targets (torch tensors) of one batch of :meth:`train_rows` rows, padded
        to the batch's longest text."""

    @abc.abstractmethod
    def loss(self, model: Any, batch: dict[str, Any], mode: str) -> Any:
        """The batch's mean loss (a scalar tensor) under ``distill.mode``."""

    # ---------------------------------------------------------------- gold, metrics, prediction
    @abc.abstractmethod
    def gold_targets(self, records: list[dict[str, Any]], where: str) -> list[Any]:
        """The reference of each gold record (``label``, ``labels`` or ``spans``), checked; raises
        ``GoldSetError`` naming the row."""

    @abc.abstractmethod
    def teacher_targets(self, table: pa.Table) -> list[Any]:
        """The teacher's result of each labelled row, as :meth:`gold_targets` gives it (None: abstained)."""

    @abc.abstractmethod
    def predict(self, model: Any, tokenizer: Any, texts: list[str], max_length: int,
                batch_size: int = 64) -> dict[str, list[Any]]:
        """Prediction columns (:meth:`prediction_fields`) for ``texts``."""

    @abc.abstractmethod
    def prediction_fields(self) -> list[pa.Field]:
        """Columns a prediction row has after ``id``."""

    @abc.abstractmethod
    def prediction_counts(self, table: pa.Table) -> dict[str, int]:
        """Label distribution of prediction rows."""

    @abc.abstractmethod
    def evaluate(self, targets: list[Any], predictions: dict[str, list[Any]]) -> dict[str, Any]:
        """Metrics of predictions against references, JSON-ready; holds ``macro_f1`` (the score that
        ranks checkpoints) and ``headline`` (the few figures a report prints)."""

    @abc.abstractmethod
    def evaluation_rows(self, texts: list[str], targets: list[Any], predictions: dict[str, list[Any]]) -> pa.Table:
        """One row per gold example (``row``: 1-based, ``text``, the reference, the prediction), for
        error analysis."""

    @abc.abstractmethod
    def agreement(self, targets: list[Any], predictions: dict[str, list[Any]]) -> np.ndarray:
        """Per row whose reference is not None (an abstention): whether the prediction is the reference
        exactly (the student's agreement with the teacher, in the retraining's drift report)."""

    def class_recalls(self, report: dict[str, Any]) -> dict[str, float]:
        """Recall per class (label, entity type) of an :meth:`evaluate` report: the retraining's guard."""
        return {name: float(scores["recall"]) for name, scores in report[self.per_class_key].items()}

    per_class_key = "per_class"  # where :meth:`evaluate` puts the per-class scores

    def plots(self, report: dict[str, Any]) -> dict[str, bytes]:
        """PNG plots of an evaluation report, by file suffix (``confusion`` -> ``<set>_confusion.png``)."""
        return {}

    @abc.abstractmethod
    def format_evaluation(self, name: str, report: dict[str, Any]) -> str:
        """The evaluation as a few printed lines (per class or per type)."""
