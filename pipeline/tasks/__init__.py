"""Task types: ``classification`` (one class per text), ``multilabel`` (any set of labels per text)
and ``spans`` (typed entity spans with character offsets). Each is one module defining its prompt
and answer format, parser, vote aggregation, columns, student, loss and metrics
(:class:`~pipeline.tasks.base.TaskType`); the stages only call them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import Config, TaskConfig
    from pipeline.tasks.base import TaskType

TYPES = ("classification", "multilabel", "spans")


def get(task: "TaskConfig", samples: int = 1) -> "TaskType":
    """The task type of ``task`` (``task.type``), for a teacher drawing ``samples`` answers per text."""
    if task.type == "classification":
        from pipeline.tasks.classification import Classification as cls
    elif task.type == "multilabel":
        from pipeline.tasks.multilabel import Multilabel as cls
    elif task.type == "spans":
        from pipeline.tasks.spans import Spans as cls
    else:
        raise ConfigError(f"task.type: must be one of {', '.join(TYPES)}, got {task.type!r}")
    return cls(task, samples)


def for_config(config: "Config") -> "TaskType":
    return get(config.task, config.teacher.samples)


def for_model(meta: dict) -> "TaskType":
    """The task type an exported student was trained for, from its ``raydistill.json``
    (models exported before task types are classification students)."""
    from pipeline.config import Label, TaskConfig, _build

    raw = (meta.get("config") or {}).get("task")
    if raw:
        task = _build(TaskConfig, raw, "task")
    else:
        task = TaskConfig(name=meta.get("task", "task"), instruction="",
                          labels=[Label(name=name, description="") for name in meta["labels"]])
    kind = get(task)
    if kind.label_names != list(meta["labels"]):
        raise ConfigError(f"model: its labels {meta['labels']} differ from its task's {kind.label_names}")
    return kind
