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
  chosen from a diverse low-loss set per class.
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
from pipeline.evaluate import load_gold
from pipeline.filters import Candidate, filter_candidates
from pipeline.freeal import diverse_demos, nearest_demos, small_loss_split
from pipeline.generate import generate, request
from pipeline.round_steps import evaluation_texts, labelled_rows
from pipeline.rounds_layout import RoundsLayout, demos_path, labels_uri, warmup_uri

RELABEL_INPUT = pa.schema([("id", pa.string()), ("text", pa.string()), ("demos", pa.string())])
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
    kept, dropped = filter_candidates(parsed, task.label_names, [], evaluation_texts(config),
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


# -- select: small-loss split, pseudo-labels, demos per noisy row ----------------------------------


def run_select(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.time()
    rounds, names = config.rounds, config.task.label_names
    layout = RoundsLayout.of(config)
    folder = layout.round_dir(r, "selection")
    storage.delete_dir(layout.fs, layout.path(*folder))
    fs, root = storage.resolve(labels_uri(config, r), config.storage)
    labelled = storage.read_parquet(fs, storage.join(root, "data"))
    has_label = pc.is_valid(labelled.column("hard_label"))
    abstained = labelled.filter(pc.invert(has_label))
    labelled = labelled.filter(has_label)
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[name] for name in labelled.column("hard_label").to_pylist()])

    warm_fs, warm_root = storage.resolve(warmup_uri(config, r), config.storage)
    model = storage.read_json(warm_fs, storage.join(warm_root, "report.json"))["model"]
    probabilities, embeddings = score_rows(model, config, labelled)
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))
    clean = small_loss_split(losses, labels, rounds.freeal_split, rounds.freeal_clean_fraction)
    noisy = ~clean
    predicted = probabilities.argmax(axis=1)
    pseudo = noisy & (probabilities.max(axis=1) >= rounds.freeal_pseudo_confidence)

    demo_rows, _ = diverse_demos(embeddings, losses, labels, clean, rounds.freeal_demos_per_class,
                                 rounds.freeal_demo_pool)
    without = [i for i in range(len(names)) if i not in demo_rows]  # no clean row, or no row at all
    pool = np.array(sorted(i for rows in demo_rows.values() for i in rows), dtype=int)
    texts = labelled.column("text").to_pylist()
    ids = labelled.column("id").to_pylist()
    noisy_rows = np.flatnonzero(noisy)
    relabel = []
    if pool.size and noisy_rows.size:
        neighbours = nearest_demos(embeddings[noisy_rows], embeddings[pool], rounds.freeal_neighbours)
        for row, near in zip(noisy_rows, neighbours):
            demos = [{"text": texts[pool[j]], "label": names[labels[pool[j]]]} for j in near]
            relabel.append({"id": ids[row], "text": texts[row], "demos": json.dumps(demos, ensure_ascii=False)})
    elif noisy_rows.size:  # no clean row anywhere: relabel without demos
        relabel = [{"id": ids[row], "text": texts[row], "demos": "[]"} for row in noisy_rows]
    # The teacher's abstentions have no label to keep: they are relabelled too, with demos of every class.
    for row_id, text in zip(abstained.column("id").to_pylist(), abstained.column("text").to_pylist()):
        demos = [{"text": texts[i], "label": names[labels[i]]} for i in pool[: rounds.freeal_neighbours]]
        relabel.append({"id": row_id, "text": text, "demos": json.dumps(demos, ensure_ascii=False)})

    train_rows = [{"text": texts[i], "label": names[labels[i]], "source": "clean"} for i in np.flatnonzero(clean)]
    train_rows += [{"text": texts[i], "label": names[predicted[i]], "source": "student pseudo-label"}
                   for i in np.flatnonzero(pseudo)]
    # ids follow the labelling job's, so a text that occurs twice keeps two rows
    student_data = labelled_rows(
        [{**row, "prompt_tokens": 0, "completion_tokens": 0} for row in train_rows], config.task,
        config.teacher.model, f"freeal-r{r}",
        ids=[ids[i] for i in np.flatnonzero(clean)] + [ids[i] for i in np.flatnonzero(pseudo)],
        rationale=f"FreeAL round {r} selection: {{source}}")
    storage.write_parquet_atomic(layout.fs, layout.path(*folder, "student_data", "data", "part-0.parquet"),
                                 student_data)
    storage.write_json(layout.fs, layout.path(*folder, "student_data", "manifest.json"),
                       {"labels": names, "freeal_selection": True})
    storage.write_parquet_atomic(layout.fs, layout.path(*folder, "relabel_input", "part-0.parquet"),
                                 pa.Table.from_pylist(relabel, schema=RELABEL_INPUT))

    per_class = {name: {"clean": int((clean & (labels == i)).sum()), "noisy": int((noisy & (labels == i)).sum()),
                        "demos": len(demo_rows.get(i, []))} for i, name in enumerate(names)}
    report = {
        "step": "select",
        "round": r,
        "labelled_rows": labelled.num_rows,
        "abstained_rows": abstained.num_rows,
        "clean": int(clean.sum()),
        "noisy": int(noisy.sum()),
        "pseudo_labelled": int(pseudo.sum()),
        "student_rows": student_data.num_rows,
        "to_relabel": len(relabel),
        "per_class": per_class,
        "classes_without_clean_rows": [names[i] for i in without],
        "split": {"method": rounds.freeal_split, "fraction": rounds.freeal_clean_fraction},
        "teacher_accuracy": _gold_accuracy(config, texts, [names[i] for i in labels], clean),
        "wall_seconds": round(time.time() - started, 2),
    }
    if without:
        log(f"[freeal] round {r}: no clean rows for {report['classes_without_clean_rows']}; their noisy rows "
            "get the nearest demos of the other classes")
    storage.write_json(layout.fs, layout.path(*folder, "report.json"), report)
    log(f"[freeal] round {r}: {report['clean']} clean, {report['noisy']} noisy ({report['pseudo_labelled']} "
        f"pseudo-labelled), {report['to_relabel']} to relabel")
    return report


def score_rows(model: str, config: Config, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The exported student's probabilities and embeddings for every row of ``table`` (Ray Data actors)."""
    import ray.data

    from pipeline.predict import StudentPredictor

    if table.num_rows == 0:
        return np.zeros((0, len(config.task.label_names))), np.zeros((0, 1))
    scored = ray.data.from_arrow(table.select(["id", "text"])).map_batches(
        StudentPredictor, fn_constructor_kwargs={"model_dir": model, "storage_config": config.storage,
                                                 "embeddings": True},
        batch_size=256, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1),
    ).to_arrow_refs()
    result = pa.concat_tables(ray.get(scored))
    order = {row_id: i for i, row_id in enumerate(result.column("id").to_pylist())}
    rows = [order[row_id] for row_id in table.column("id").to_pylist()]
    probabilities = np.array(result.column("probabilities").to_pylist(), dtype=float)[rows]
    embeddings = np.array(result.column("embedding").to_pylist(), dtype=float)[rows]
    return probabilities, embeddings


def _gold_accuracy(config: Config, texts: list[str], labels: list[str], clean: np.ndarray) -> Optional[dict]:
    """The teacher's labels against ``rounds.freeal_gold`` (matched by text), overall and on the clean rows."""
    if not config.rounds.freeal_gold:
        return None
    gold_texts, gold_labels = load_gold(config.rounds.freeal_gold, config.task.label_names, "rounds.freeal_gold",
                                        config.storage)
    names = config.task.label_names
    gold = {text: names[label] for text, label in zip(gold_texts, gold_labels)}
    matched = [i for i, text in enumerate(texts) if text in gold]
    right = np.array([labels[i] == gold[texts[i]] for i in matched], dtype=bool)
    in_clean = clean[matched] if matched else np.zeros(0, dtype=bool)
    return {
        "matched_rows": len(matched),
        "accuracy": float(right.mean()) if matched else None,
        "clean_accuracy": float(right[in_clean].mean()) if in_clean.any() else None,
        "noisy_accuracy": float(right[~in_clean].mean()) if (~in_clean).any() else None,
    }


# -- merge: the teacher's new labels replace the noisy rows' --------------------------------------


def run_merge(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.time()
    layout = RoundsLayout.of(config)
    out = layout.round_dir(r, "labels")
    storage.delete_dir(layout.fs, layout.path(*out))
    fs, root = storage.resolve(labels_uri(config, r - 1), config.storage)
    previous = storage.read_parquet(fs, storage.join(root, "data"))
    answers = layout.path(*layout.round_dir(r, "relabelled"), "data")
    relabelled = (storage.read_parquet(layout.fs, answers) if storage.list_files(layout.fs, answers, (".parquet",))
                  else schemas.LABELLED.empty_table())
    relabelled = relabelled.filter(pc.greater(relabelled.column("n_valid"), 0))  # an abstention keeps the old row
    new = {row["id"]: row for row in relabelled.to_pylist()}
    rows, changed, moves = [], 0, {}
    for row in previous.to_pylist():
        replacement = new.get(row["id"])
        if replacement is not None:
            if replacement["hard_label"] != row["hard_label"]:
                changed += 1
                move = f"{row['hard_label'] or 'abstained'} -> {replacement['hard_label']}"
                moves[move] = moves.get(move, 0) + 1
            row = replacement
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=schemas.LABELLED)
    storage.write_parquet_atomic(layout.fs, layout.path(*out, "data", "part-0.parquet"), table)
    storage.write_json(layout.fs, layout.path(*out, "manifest.json"), {"labels": config.task.label_names,
                                                                       "freeal_merge": r})
    report = {
        "step": "merge",
        "round": r,
        "rows": table.num_rows,
        "relabelled_rows": len(new),
        "labels_changed": changed,
        "changes": dict(sorted(moves.items())),
        "wall_seconds": round(time.time() - started, 2),
    }
    storage.write_json(layout.fs, layout.path(*layout.round_dir(r, "merge.json")), report)
    log(f"[freeal] round {r}: relabelling changed {changed} of {table.num_rows} labels")
    return report
