"""The column contracts between stages, written down once.

Every stage reads and writes parquet with these schemas; :func:`check_columns`
validates a table at a stage boundary and names what is missing or mistyped.
"""

from __future__ import annotations

import pyarrow as pa

# Output of the labelling job: one row per input id. Columns before and after the task type's own
# (pipeline/tasks/: classification's hard_label and soft_label, multilabel's labels and label_scores,
# spans' spans, dropped_types and unaligned).
LABELLED_HEAD = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("votes", pa.list_(pa.string()), nullable=False),  # k canonical answers or "<abstain>"
]
LABELLED_TAIL = [
    pa.field("consistency", pa.float64(), nullable=False),  # agreement of the k samples, 0..1
    pa.field("n_valid", pa.int32(), nullable=False),  # samples that parsed (0: the row abstained)
    pa.field("rationale", pa.string()),  # one sample that agrees with the result, reasoning included
    pa.field("prompt_tokens", pa.int64(), nullable=False),
    pa.field("completion_tokens", pa.int64(), nullable=False),  # over all k samples
    pa.field("truncated", pa.bool_(), nullable=False),  # text cut to fit the context
    pa.field("teacher_model", pa.string(), nullable=False),
    pa.field("prompt_hash", pa.string(), nullable=False),
]
CLASSIFICATION_LABELS = [
    pa.field("hard_label", pa.string()),  # majority; null when every vote abstained
    pa.field("soft_label", pa.list_(pa.float64())),  # vote fractions in label order
]


def labelled_schema(label_fields: list[pa.Field]) -> pa.Schema:
    """A labelled row's schema with a task type's own columns."""
    return pa.schema([*LABELLED_HEAD, *label_fields, *LABELLED_TAIL])


# A classification task's labelled rows (the rounds' strategies work on these).
LABELLED = labelled_schema(CLASSIFICATION_LABELS)

# Rows the labelling job refused, with the reason; nothing is dropped silently.
QUARANTINE = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),  # the raw value, JSON-encoded when not a string
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the input file
    ]
)

# Rows the teacher could not label (the engine rejected them, or they killed it), with the error.
# A rerun skips them; deleting failed/ makes the next run try them again.
FAILED = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

# What each labelling actor returns per committed shard (small, for progress).
SHARD_SUMMARY = pa.schema(
    [
        pa.field("shard", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("failed", pa.int64()),  # rows that went to failed/ instead
        pa.field("abstentions", pa.int64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("demos_dropped", pa.int64()),  # per-row demos left out so the prompt fits the context
        pa.field("seconds", pa.float64()),
    ]
)


class SchemaError(ValueError):
    """A dataset does not have the columns a stage needs."""


def check_columns(schema: pa.Schema, expected: pa.Schema, where: str) -> None:
    """Raise :class:`SchemaError` naming the first missing or mistyped column."""
    for field in expected:
        index = schema.get_field_index(field.name)
        if index < 0:
            raise SchemaError(f"{where}: column {field.name!r} is missing (columns: {schema.names})")
        actual = schema.field(index).type
        if actual != field.type:
            raise SchemaError(f"{where}: column {field.name!r} has type {actual}, expected {field.type}")
