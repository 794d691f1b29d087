"""The synthesis steps of the rounds (error extrapolation, PromptMix), each run as its own Ray job.

Layout under ``rounds.output`` (local or s3://)::

    config.yaml, manifest.json        the run's config and state (pipeline.rounds)
    seed/                             optional seed synthesis: a labelled dataset
        data/part-*.parquet           (schemas.LABELLED), manifest.json, report.json,
        candidates.parquet            every parsed answer, kept or not, with the reason
    rounds/<r>/errors.parquet         round r: the previous student's validation errors
    rounds/<r>/extra/candidates.parquet   the teacher's answers, parsed (synthesize or mix step)
    rounds/<r>/extra/data/*.parquet   the filtered new examples (filter step), manifest.json,
    rounds/<r>/extra/report.json      counts per filter
    rounds/<r>/relabelled/            PromptMix: the labelling job's output on extra/data,
    rounds/<r>/relabel.json           and how its labels differ from the intended ones
    rounds/<r>/student/               the distillation job's output for round r
    rounds/<r>/student-intended/      PromptMix: the same, trained on the intended labels

Synthetic rows follow the labelling job's schema (one vote, a one-hot soft
label, consistency 1), so the distillation job trains on them unchanged.
Each step writes its report last: a step without its report did not finish
and is run again from the start, replacing its partial outputs.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas, storage, synthesis
from pipeline.cluster import init_ray
from pipeline.config import Config, TaskConfig
from pipeline.evaluate import load_gold
from pipeline.filters import Candidate, NearDuplicateIndex, candidate_index, filter_candidates, near_duplicates
from pipeline.generate import generate, request
from pipeline.rounds_layout import RoundsLayout, base_labels_uri, extra_uri, relabelled_uri, student_uri

CANDIDATES = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # what the example was written from
    pa.field("text", pa.string()),
    pa.field("label", pa.string(), nullable=False),
    pa.field("problem", pa.string()),  # set when the answer held no usable example
    pa.field("prompt_tokens", pa.int64(), nullable=False),  # of the request it came from
    pa.field("completion_tokens", pa.int64(), nullable=False),
])


def relabel_report(config: Config, r: int) -> dict[str, Any]:
    """How the labelling job's labels compare with the labels the examples were written for."""
    intended_fs, intended_root = storage.resolve(extra_uri(config, r), config.storage)
    intended = storage.read_parquet(intended_fs, storage.join(intended_root, "data"), columns=["id", "hard_label"])
    fs, root = storage.resolve(relabelled_uri(config, r), config.storage)
    relabelled = storage.read_parquet(fs, storage.join(root, "data"), columns=["id", "hard_label", "n_valid"])
    wanted = dict(zip(intended.column("id").to_pylist(), intended.column("hard_label").to_pylist()))
    changed, unchanged, abstained, moves = 0, 0, 0, {}
    for row in relabelled.to_pylist():
        if not row["n_valid"]:
            abstained += 1
        elif row["hard_label"] == wanted[row["id"]]:
            unchanged += 1
        else:
            changed += 1
            move = f"{wanted[row['id']]} -> {row['hard_label']}"
            moves[move] = moves.get(move, 0) + 1
    return {
        "examples": intended.num_rows,
        "labelled": relabelled.num_rows,
        "quarantined": intended.num_rows - relabelled.num_rows,
        "relabelled": changed,
        "unchanged": unchanged,
        "abstained": abstained,
        "changes": dict(sorted(moves.items())),
    }


def evaluation_texts(config: Config) -> list[str]:
    """Validation and test texts: no new example may be a near copy of one."""
    texts: list[str] = []
    for key, uri in (("distill.validation", config.distill.validation), ("distill.test", config.distill.test)):
        if uri:
            texts += load_gold(uri, config.task.label_names, key, config.storage)[0]
    return texts


# -- seed synthesis: explain, then generate ---------------------------------------------------------


def run_seed(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Reasons per label, then examples each written for one reason; filtered and stored as labels."""
    started = time.time()
    rounds, task = config.rounds, config.task
    layout = RoundsLayout.of(config)
    storage.delete_dir(layout.fs, layout.path("seed"))
    init_ray()

    asked = [request(f"reasons/{label}", synthesis.reasons_messages(task, label, rounds.reasons_per_label))
             for label in task.label_names]
    answers = generate(config, asked, log, "seed: reasons")
    reasons: dict[str, list[str]] = {}
    without_reasons = []
    for label, completions in zip(task.label_names, answers.column("completions").to_pylist()):
        found = synthesis.parse_reasons(completions[0] if completions else "", rounds.reasons_per_label)
        if not found:  # fall back to the label's own description, and say so in the report
            without_reasons.append(label)
            found = [next(item.description for item in task.labels if item.name == label)]
        reasons[label] = found

    asked, sources = [], {}
    for label in task.label_names:
        for j in range(rounds.seed_examples_per_label):
            reason = reasons[label][j % len(reasons[label])]
            request_id = f"seed/{label}/{j}"
            asked.append(request(request_id, synthesis.example_messages(task, label, reason)))
            sources[request_id] = (label, f"reason: {reason}")
    answers = generate(config, asked, log, "seed: examples")
    candidates = _parse(config, answers, sources, limit=1)
    report = _filter_and_write(config, layout, ("seed",), candidates, id_prefix="seed", training=[])
    report.update({
        "step": "seed",
        "reasons": reasons,
        "labels_without_reasons": without_reasons,
        "requests": len(asked) + len(task.label_names),
        "wall_seconds": round(time.time() - started, 2),
    })
    storage.write_json(layout.fs, layout.path("seed", "report.json"), report)
    return report


# -- a round: errors -> new examples -> filter -------------------------------------------------------


def run_synthesize(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The previous round's validation errors, and m new examples like each, from the teacher."""
    started = time.time()
    rounds, task = config.rounds, config.task
    layout = RoundsLayout.of(config)
    storage.delete_dir(layout.fs, layout.path(*layout.round_dir(r, "extra")))

    errors = validation_errors(config, r - 1)
    if rounds.max_errors is not None and errors.num_rows > rounds.max_errors:
        errors = errors.take(pa.array(_stable_sample(errors.column("row").to_pylist(), rounds.max_errors, r)))
    storage.write_parquet_atomic(layout.fs, layout.path(*layout.round_dir(r, "errors.parquet")), errors)
    log(f"[round {r}] {errors.num_rows} validation errors of round {r - 1}'s student to extrapolate from")

    asked, sources = [], {}
    for row in errors.to_pylist():
        request_id = f"round{r}/row{row['row']}"
        text = row["text"][: rounds.max_chars]
        asked.append(request(request_id, synthesis.extrapolation_messages(task, text, row["label"],
                                                                          rounds.examples_per_error)))
        sources[request_id] = (row["label"], f"validation row {row['row']} (predicted {row['predicted']})")
    return _ask_and_store(config, layout, r, asked, sources, rounds.examples_per_error, log, started,
                          {"step": "synthesize", "round": r, "errors": errors.num_rows})


def run_mix(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    """PromptMix: per class, examples mixing it with another class (seeded by the round)."""
    started = time.time()
    rounds, task = config.rounds, config.task
    layout = RoundsLayout.of(config)
    storage.delete_dir(layout.fs, layout.path(*layout.round_dir(r, "extra")))
    plan = synthesis.mixing_plan(task.label_names, rounds.mix_per_class, rounds.mix_per_request,
                                 rounds.mix_alpha_min, rounds.mix_alpha_max, seed=r)
    asked, sources = [], {}
    for i, mix in enumerate(plan):
        request_id = f"round{r}/mix{i}"
        asked.append(request(request_id, synthesis.mixing_messages(task, mix)))
        sources[request_id] = (mix.label, f"mix {mix.alpha:.2f} {mix.label} + {1 - mix.alpha:.2f} {mix.partner}")
    log(f"[round {r}] {len(plan)} mixing requests, {rounds.mix_per_class} examples asked per class")
    pairs: dict[str, int] = {}
    for mix in plan:
        pairs[f"{mix.label}+{mix.partner}"] = pairs.get(f"{mix.label}+{mix.partner}", 0) + mix.n
    return _ask_and_store(config, layout, r, asked, sources, rounds.mix_per_request, log, started,
                          {"step": "mix", "round": r, "asked_per_pair": pairs})


def _ask_and_store(
    config: Config, layout: RoundsLayout, r: int, asked: list[dict[str, Any]], sources: dict[str, tuple[str, str]],
    limit: int, log: Callable[[str], None], started: float, report: dict[str, Any],
) -> dict[str, Any]:
    """Generate, parse at most ``limit`` examples per answer, store the candidates and synthesis.json."""
    extra = layout.round_dir(r, "extra")
    init_ray()
    answers = generate(config, asked, log, f"round {r}: {report['step']}")
    candidates = _parse(config, answers, sources, limit=limit)
    storage.write_parquet_atomic(layout.fs, layout.path(*extra, "candidates.parquet"), candidates)
    report.update({
        "requests": len(asked),
        "candidates": candidates.num_rows,
        "unusable": _count(candidates.column("problem")),
        "prompt_tokens": int(pc.sum(answers.column("prompt_tokens")).as_py() or 0),
        "completion_tokens": int(pc.sum(answers.column("completion_tokens")).as_py() or 0),
        "wall_seconds": round(time.time() - started, 2),
    })
    storage.write_json(layout.fs, layout.path(*extra, "synthesis.json"), report)
    return report


def run_filter(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Keep the usable, new, non-leaking candidates of round r as a labelled dataset."""
    started = time.time()
    layout = RoundsLayout.of(config)
    extra = layout.round_dir(r, "extra")
    for partial in ("data", "manifest.json", "report.json"):
        path = layout.path(*extra, partial)
        if partial == "data":
            storage.delete_dir(layout.fs, path)
        elif storage.exists(layout.fs, path):
            layout.fs.delete_file(path)
    candidates = storage.read_parquet(layout.fs, layout.path(*extra, "candidates.parquet"))
    init_ray()
    log(f"[round {r}] filtering {candidates.num_rows} candidates against round {r}'s training data")
    report = _filter_and_write(config, layout, extra, candidates, id_prefix=f"r{r}",
                               training=training_data(config, r))
    report.update({"step": "filter", "round": r, "wall_seconds": round(time.time() - started, 2)})
    storage.write_json(layout.fs, layout.path(*extra, "report.json"), report)
    log(f"[round {r}] kept {report['kept']} of {report['candidates']} (checked against "
        f"{report['training_rows']} training rows); dropped {report['dropped']}")
    return report


def validation_errors(config: Config, r: int) -> pa.Table:
    """Rows of the gold validation set that round r's student got wrong."""
    fs, root = storage.resolve(student_uri(config, r), config.storage)
    predictions = storage.read_parquet(fs, storage.join(root, "evaluation", "validation_predictions.parquet"))
    return predictions.filter(pc.not_equal(predictions.column("label"), predictions.column("predicted")))


def training_data(config: Config, r: int) -> list[tuple[Any, list[str]]]:
    """Round r's training data before its new examples, as ``(filesystem, parquet files)`` per dataset:
    round 0's data and earlier rounds' extras (relabelling keeps texts)."""
    sources = []
    for uri in [base_labels_uri(config)] + [extra_uri(config, q) for q in range(1, r)]:
        fs, root = storage.resolve(uri, config.storage)
        files = storage.list_files(fs, storage.join(root, "data"), (".parquet",))
        if files:
            sources.append((fs, files))
    return sources


def training_duplicates(index: NearDuplicateIndex, training: list[tuple[Any, list[str]]]) -> tuple[set[int], int]:
    """Positions in ``index`` (the candidates) that are near duplicates of a training text, and the
    training rows read. The texts stream through Ray tasks, each fetching the index once: the driver
    holds the index and the positions found, whatever the size of the training data."""
    import ray
    import ray.data

    found: set[int] = set()
    rows = 0
    if not training:
        return found, rows
    ref = ray.put(index)
    for fs, files in training:
        probed = ray.data.read_parquet(files, filesystem=fs).select_columns(["text"]).map_batches(
            _probe_batch, batch_format="pyarrow", fn_kwargs={"index": ref})
        for batch in probed.iter_batches(batch_format="pyarrow", batch_size=None):
            rows += sum(batch.column("rows").to_pylist())
            for positions in batch.column("positions").to_pylist():
                found.update(positions)
    return found, rows


def _probe_batch(batch: pa.Table, index: Any) -> pa.Table:
    from pipeline.idindex import Loaded

    found = near_duplicates(Loaded.get(index), batch.column("text").to_pylist())
    return pa.table({"positions": pa.array([sorted(found)], pa.list_(pa.int64())),
                     "rows": pa.array([batch.num_rows], pa.int64())})


def _parse(config: Config, answers: pa.Table, sources: dict[str, tuple[str, str]], limit: int) -> pa.Table:
    """One candidate row per example found in each completion (at most ``limit`` per request)."""
    label_names = config.task.label_names
    snippets = [config.task.instruction, "Write one realistic text", "A classifier got this text wrong",
                "so each should still be labelled"]
    rows = []
    for answer in answers.to_pylist():
        label, source = sources[answer["request_id"]]
        tokens = {"prompt_tokens": answer["prompt_tokens"], "completion_tokens": answer["completion_tokens"]}
        if answer["problem"]:
            parsed = [Candidate(None, label, problem=answer["problem"])]
        else:
            parsed = [c for completion in answer["completions"]
                      for c in synthesis.parse_examples(completion, label, label_names, snippets)]
            usable = [c for c in parsed if c.problem is None][:limit]
            parsed = usable or parsed[:1]  # nothing usable: keep one row with the reason
        rows += [{"request_id": answer["request_id"], "source": source, "text": c.text, "label": c.label,
                  "problem": c.problem, **tokens} for c in parsed]
    return pa.Table.from_pylist(rows, schema=CANDIDATES)


def _filter_and_write(
    config: Config, layout: RoundsLayout, folder: tuple[str, ...], candidates: pa.Table, id_prefix: str,
    training: list[tuple[Any, list[str]]],
) -> dict[str, Any]:
    rounds, label_names = config.rounds, config.task.label_names
    rows = candidates.to_pylist()
    parsed = [Candidate(row["text"], row["label"], row["problem"]) for row in rows]
    duplicates, training_rows = training_duplicates(candidate_index(parsed, rounds.near_duplicate_threshold),
                                                    training)
    kept, dropped = filter_candidates(
        parsed, label_names, evaluation_texts(config), min_chars=rounds.min_chars,
        max_chars=rounds.max_chars, threshold=rounds.near_duplicate_threshold, training_duplicates=duplicates,
    )
    kept_ids = {id(c) for c in kept}
    kept_rows = [row for row, c in zip(rows, parsed) if id(c) in kept_ids]
    if folder == ("seed",):
        storage.write_parquet_atomic(layout.fs, layout.path("seed", "candidates.parquet"), candidates)
    if kept_rows:
        table = labelled_rows(kept_rows, config.task, config.teacher.model, id_prefix)
        storage.write_parquet_atomic(layout.fs, layout.path(*folder, "data", _part_name(table)), table)
    storage.write_json(layout.fs, layout.path(*folder, "manifest.json"),
                       {"labels": label_names, "synthetic": True, "teacher_model": config.teacher.model})
    distribution = {name: 0 for name in label_names}
    for row in kept_rows:
        distribution[row["label"]] += 1
    return {
        "candidates": len(rows),
        "kept": len(kept_rows),
        "dropped": dropped,
        "label_distribution": distribution,
        "training_rows": training_rows,
    }


def labelled_rows(rows: list[dict[str, Any]], task: TaskConfig, teacher_model: str, id_prefix: str,
                  ids: Optional[list[str]] = None, rationale: str = "synthetic, from {source}") -> pa.Table:
    """Rows in the labelling job's schema with one vote for ``row["label"]`` (synthetic examples, FreeAL's
    selection). Ids are ``id_prefix`` plus a hash of the text unless ``ids`` are given."""
    label_names = task.label_names
    one_hot = {name: [1.0 if other == name else 0.0 for other in label_names] for name in label_names}
    prompt_hash = synthesis.prompt_hash(task)
    return pa.Table.from_pydict({
        "id": ids if ids is not None else [
            f"{id_prefix}-{hashlib.sha256(row['text'].encode()).hexdigest()[:20]}" for row in rows],
        "text": [row["text"] for row in rows],
        "votes": [[row["label"]] for row in rows],
        "hard_label": [row["label"] for row in rows],
        "soft_label": [one_hot[row["label"]] for row in rows],
        "consistency": [1.0] * len(rows),
        "n_valid": [1] * len(rows),
        "rationale": [rationale.format(source=row["source"]) for row in rows],
        "prompt_tokens": [row["prompt_tokens"] for row in rows],
        "completion_tokens": [row["completion_tokens"] for row in rows],
        "truncated": [False] * len(rows),
        "teacher_model": [teacher_model] * len(rows),
        "prompt_hash": [prompt_hash] * len(rows),
    }, schema=schemas.LABELLED)


def _part_name(table: pa.Table) -> str:
    digest = hashlib.sha256("\n".join(table.column("id").to_pylist()).encode()).hexdigest()[:24]
    return f"part-{digest}.parquet"


def _stable_sample(rows: list[int], k: int, r: int) -> list[int]:
    """Positions of k rows chosen by a seeded shuffle: the same errors on every rerun of round r."""
    order = np.random.default_rng(r).permutation(len(rows))
    return sorted(order[:k].tolist())


def _count(column: pa.ChunkedArray) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in column.to_pylist():
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return counts

