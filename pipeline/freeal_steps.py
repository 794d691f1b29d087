"""The FreeAL steps of ``rounds.strategy: freeal``, each run as its own Ray job.

FreeAL (EMNLP'23, human-free active learning) alternates between the teacher
and the student. The labelling and distillation jobs do the labelling and the
training; this module adds the steps between them:

- ``demos`` (round 0): the teacher writes its own demos per label from the
  label descriptions and a few unlabelled texts, so no human label is needed;
  the labelling job then labels the corpus with them (``task.demos``).
- ``select``: the student trained on the round's teacher labels (the
  ``warmup`` distillation job) scores every labelled row; per class the
  small-loss rows are clean, the rest noisy (:func:`pipeline.freeal.small_loss_split`).
  It writes the student's training set (clean rows with their labels, plus
  noisy rows the student is confident about with its own label, the
  semi-supervised part) and the relabelling input: each noisy row with its own
  demos, the clean examples nearest to it in the student's embedding space,
  chosen from a diverse low-loss set per class. Streamed over Ray Data:
  :mod:`pipeline.freeal_select`.
- ``merge`` (round r >= 1): the teacher's new labels for the noisy rows
  (the labelling job with ``data.demos_column``) replace the old ones.

Layout under ``rounds.output``::

    rounds/0/demos.json, demos_candidates.parquet   the teacher's own demos
    rounds/<r>/labels/           the teacher's labels of round r (labelling job, or merge)
    rounds/<r>/merge.json        labels changed by relabelling (r >= 1)
    rounds/<r>/warmup/           the student trained on those labels as they are
    rounds/<r>/selection/        student_data/, relabel_input/, report.json
    rounds/<r>/student/          the round's student: clean + confident pseudo-labels
    rounds/<r+1>/relabelled/     the labelling job's answers for round r's noisy rows
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas, storage, synthesis
from pipeline.cluster import init_ray
from pipeline.config import Config, TaskConfig
from pipeline.corpus import open_corpus, read_corpus
from pipeline.filters import Candidate, filter_candidates
from pipeline.generate import generate, request
from pipeline.round_steps import evaluation_texts
from pipeline.rounds_layout import RoundsLayout, demos_path, labels_uri

STYLE_TEXTS = 3  # unlabelled texts shown to the teacher when it writes its own demos


# -- round 0: the teacher's own demos -------------------------------------------------------------


def demo_messages(task: TaskConfig, label: str, n: int, examples: list[str]) -> list[dict[str, str]]:
    """Ask for ``n`` texts of ``label``, in the style of a few unlabelled texts of the corpus."""
    shown = "\n".join(f"<text>{text}</text>" for text in examples)
    description = next(item.description for item in task.labels if item.name == label)
    return [
        synthesis.system_turn(task),
        {"role": "user", "content": (
            f"Some unlabelled texts from the data set:\n{shown}\n"
            f"Write {n} new texts in the same style that should be labelled '{label}' ({description}). "
            "One text per line, each starting with 'Text:'."
        )},
    ]


def run_demos(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The teacher writes ``rounds.freeal_demos_per_label`` demos per label (round 0 only)."""
    started = time.time()
    rounds, task = config.rounds, config.task
    layout = RoundsLayout.of(config)
    from ray.data.expressions import col

    init_ray()
    corpus = open_corpus(config.data, config.storage)
    style = [row["text"] for row in read_corpus(corpus).filter(expr=col("problem").is_null()).take(STYLE_TEXTS)]
    n = rounds.freeal_demos_per_label
    asked = [request(f"demos/{label}", demo_messages(task, label, n, style)) for label in task.label_names]
    answers = generate(config, asked, log, "freeal: demos")
    parsed: list[Candidate] = []
    for label, answer in zip(task.label_names, answers.to_pylist()):
        found = [c for text in answer["completions"] for c in synthesis.parse_examples(
            text, label, task.label_names, ["Some unlabelled texts from the data set", "in the same style"])]
        parsed += found or [Candidate(None, label, problem=answer["problem"] or "empty answer")]
    kept, dropped = filter_candidates(parsed, task.label_names, evaluation_texts(config),
                                      min_chars=rounds.min_chars, max_chars=rounds.max_chars,
                                      threshold=rounds.near_duplicate_threshold)
    demos, per_label = [], {name: 0 for name in task.label_names}
    for candidate in kept:
        if per_label[candidate.label] < n:
            per_label[candidate.label] += 1
            demos.append({"text": candidate.text, "label": candidate.label})
    storage.write_parquet_atomic(layout.fs, layout.path(*layout.round_dir(0, "demos_candidates.parquet")),
                                 pa.Table.from_pylist([{"text": c.text, "label": c.label, "problem": c.problem}
                                                       for c in parsed]))
    report = {
        "step": "demos",
        "demos": demos,
        "per_label": per_label,
        "labels_without_demos": [name for name, count in per_label.items() if count == 0],
        "candidates": len(parsed),
        "dropped": dropped,
        "style_texts": len(style),
        "wall_seconds": round(time.time() - started, 2),
    }
    if report["labels_without_demos"]:
        log(f"[freeal] no usable demo for {report['labels_without_demos']}: those labels rely on their "
            "description alone")
    fs, path = demos_path(config)
    storage.write_json(fs, path, report)
    return report


def task_demos_override(config: Config) -> str:
    """``--set task.demos=...`` for the round-0 labelling job: the teacher's own demos, no rationale."""
    fs, path = demos_path(config)
    demos = storage.read_json(fs, path)["demos"]
    return "task.demos=" + json.dumps(demos, ensure_ascii=False)


# -- merge: the teacher's new labels replace the noisy rows' --------------------------------------


def run_merge(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Round r-1's labels with the rows round r's relabelling answered replaced (an abstention keeps the
    old row), streamed: the relabelled rows are sorted by id hash into one lookup in Ray's object store,
    and Ray Data maps the earlier labels through it, each task writing its own file. The driver holds
    refs and the counts of label changes (as many as label pairs)."""
    import collections

    import ray
    import ray.data

    started = time.time()
    layout = RoundsLayout.of(config)
    out = layout.round_dir(r, "labels")
    storage.delete_dir(layout.fs, layout.path(*out))
    data_path = layout.path(*out, "data")
    fs, root = storage.resolve(labels_uri(config, r - 1), config.storage)
    previous = storage.list_files(fs, storage.join(root, "data"), (".parquet",))
    answers = storage.list_files(layout.fs, layout.path(*layout.round_dir(r, "relabelled"), "data"), (".parquet",))
    init_ray()
    lookup, relabelled_rows = _relabel_lookup(layout.fs, answers)
    rows, moves = 0, collections.Counter()
    if previous:
        summaries = ray.data.read_parquet(previous, filesystem=fs).map_batches(
            _merge_batch, batch_format="pyarrow",
            fn_kwargs={"lookup": lookup, "data_fs": layout.fs, "data_path": data_path})
        for batch in summaries.iter_batches(batch_format="pyarrow", batch_size=None):
            for move, n in zip(batch.column("move").to_pylist(), batch.column("n").to_pylist()):
                if move is None:
                    rows += n
                else:
                    moves[move] += n
    else:
        storage.write_parquet_atomic(layout.fs, storage.join(data_path, "part-0.parquet"), schemas.LABELLED.empty_table())
    del lookup
    storage.write_json(layout.fs, layout.path(*out, "manifest.json"), {"labels": config.task.label_names,
                                                                       "freeal_merge": r})
    changed = sum(moves.values())
    report = {
        "step": "merge",
        "round": r,
        "rows": rows,
        "relabelled_rows": relabelled_rows,
        "labels_changed": changed,
        "changes": dict(sorted(moves.items())),
        "wall_seconds": round(time.time() - started, 2),
    }
    storage.write_json(layout.fs, layout.path(*layout.round_dir(r, "merge.json")), report)
    log(f"[freeal] round {r}: relabelling changed {changed} of {rows} labels")
    return report


def _relabel_lookup(fs: Any, files: list[str]) -> tuple[Optional[Any], int]:
    """The relabelled rows that name a label, as ``(IdIndex, rows in the index's order)`` in the object
    store (its ref, or None when there are none), and their count. Read by Ray tasks, sorted in one."""
    import ray

    from pipeline.cluster import map_files

    refs = map_files(fs, files, _answered_rows)
    if not refs:
        return None, 0
    lookup, count = ray.remote(num_returns=2)(_sorted_lookup).remote(*refs)
    count = ray.get(count)
    return (lookup if count else None), count


def _answered_rows(fs: Any, files: list[str]) -> pa.Table:
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, filesystem=fs, schema=schemas.LABELLED) for f in files]
    table = pa.concat_tables(tables) if tables else schemas.LABELLED.empty_table()
    return table.filter(pc.greater(table.column("n_valid"), 0))  # an abstention keeps the old row


def _sorted_lookup(*tables: pa.Table) -> tuple[Any, int]:
    from pipeline import idindex

    table = pa.concat_tables(tables)
    index, order = idindex.sorted_by_hash(table.column("id"), idindex.hash_ids(table.column("id")))
    return (index, table.take(pa.array(order)).combine_chunks()), table.num_rows


def _merge_batch(batch: pa.Table, lookup: Optional[Any], data_fs: Any, data_path: str) -> pa.Table:
    """One block of the earlier labels, relabelled rows replaced, committed under a name made of its ids;
    returns its counts: a row with ``move`` null and the rows written, and one per label change."""
    import collections

    from pipeline.committed import shard_name
    from pipeline.idindex import Loaded

    batch = batch.cast(schemas.LABELLED)
    moves: collections.Counter[str] = collections.Counter()
    if lookup is not None and batch.num_rows:
        index, rows = Loaded.get(lookup)
        at = index.positions(batch.column("id"))
        hit = np.nonzero(at >= 0)[0]
        if len(hit):
            new = rows.take(pa.array(at[hit]))
            for old, label in zip(batch.column("hard_label").take(pa.array(hit)).to_pylist(),
                                  new.column("hard_label").to_pylist()):
                if old != label:
                    moves[f"{old or 'abstained'} -> {label}"] += 1
            order = np.arange(batch.num_rows)
            order[hit] = batch.num_rows + np.arange(len(hit))
            batch = pa.concat_tables([batch, new]).take(pa.array(order))
    if batch.num_rows:
        name = shard_name(batch.column("id").to_pylist())
        storage.write_parquet_atomic(data_fs, storage.join(data_path, name), batch)
    return pa.table({"move": pa.array([None, *moves], pa.string()),
                     "n": pa.array([batch.num_rows, *moves.values()], pa.int64())})
