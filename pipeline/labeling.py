"""The labelling job: corpus -> Ray Data -> vLLM teacher actors -> labelled parquet.

Output layout under ``data.output`` (local or s3://)::

    manifest.json          labels, prompt hash, teacher and sampling settings
    data/part-*.parquet    labelled rows (schemas.LABELLED), one shard per batch
    quarantine/*.parquet   rows that could not be labelled, with the reason
    report.json            the run's report

Exactly once: every shard is committed atomically under a name derived from
the ids it holds, and a run first reads the ids already committed and skips
them. A killed job started again therefore labels only what is missing, and
a retried batch overwrites its own shard. A final check over the committed
ids removes any second copy of an id (none is expected) before the report.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import prompts, reports, storage
from pipeline.cluster import init_ray
from pipeline.config import Config, ConfigError
from pipeline.corpus import open_corpus, read_corpus
from pipeline.teacher import PromptRenderer, TeacherLabeler, engine_pool_options

DUPLICATE_ID = "duplicate id"


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    fs: Any
    root: str

    @property
    def data(self) -> str:
        return storage.join(self.root, "data")

    @property
    def quarantine(self) -> str:
        return storage.join(self.root, "quarantine")

    @property
    def manifest(self) -> str:
        return storage.join(self.root, "manifest.json")

    @property
    def report(self) -> str:
        return storage.join(self.root, "report.json")


def run_labeling(config: Config, *, smoke: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Label the corpus of ``config.data.input`` into ``config.data.output``.

    Returns the report (also written to ``report.json`` beside the output).
    """
    started = time.time()
    fs, root = storage.resolve(config.data.output, config.storage)
    out = OutputLayout(fs, root)

    # Everything that can be wrong with the input or config fails here,
    # before any engine is started.
    corpus = open_corpus(config.data, config.storage)
    _check_prompt_fits(config)
    manifest = _manifest(config)
    storage.claim_output(out.fs, out.manifest, manifest, config.data.output, "data.output")
    log(f"[label] {len(corpus.files)} {corpus.format} file(s) from {config.data.input}")

    init_ray()
    rows = read_corpus(corpus, config.task.label_names)
    index = rows.select_columns(["id", "problem"]).materialize()
    duplicates = _duplicate_ids(index)
    done = committed_ids(out)
    counts = _count_work(index, duplicates, done)
    log(
        f"[label] {counts['input']} rows: {counts['valid']} to label, {counts['quarantined']} quarantined, "
        f"{counts['already_done']} already committed, {counts['todo']} left"
    )

    _write_quarantine(rows, duplicates, out, expected=counts["quarantined"])
    run_stats = _label(rows, duplicates, done, config, out, counts["todo"], log)

    removed = remove_duplicate_ids(out)
    report = reports.labeling_report(
        out,
        config,
        input_rows=counts["input"],
        quarantine=counts["problems"],
        already_done=counts["already_done"],
        run=run_stats,
        duplicates_removed=removed,
        wall_seconds=time.time() - started,
        smoke=smoke,
    )
    storage.write_json(fs, out.report, report)
    return report


def _check_prompt_fits(config: Config) -> None:
    """Load the teacher's tokenizer (not its weights) and check the prompt budget."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.teacher.model)
    except OSError as err:
        raise ConfigError(f"teacher.model: cannot load tokenizer of {config.teacher.model!r}: {err}") from err
    PromptRenderer(tokenizer, config.task, config.teacher.max_model_len, config.teacher.max_tokens)


def _manifest(config: Config) -> dict[str, Any]:
    teacher = config.teacher
    return {
        "task": config.task.name,
        "labels": config.task.label_names,
        "prompt_hash": prompts.prompt_hash(config.task),
        "teacher_model": teacher.model,
        "sampling": {
            "samples": teacher.samples,
            "temperature": teacher.temperature,
            "top_p": teacher.top_p,
            "max_tokens": teacher.max_tokens,
            "seed": teacher.seed,
        },
        "input": config.data.input,
    }


def committed_ids(out: OutputLayout) -> pa.Array:
    """Ids of every row already committed under ``data/``."""
    files = storage.list_files(out.fs, out.data, (".parquet",))
    arrays = [pq.read_table(f, filesystem=out.fs, columns=["id"]).column("id") for f in files]
    if not arrays:
        return pa.array([], pa.string())
    return pa.chunked_array([c for a in arrays for c in a.chunks], pa.string()).combine_chunks()


def _duplicate_ids(index: Any) -> pa.Array:
    """Ids that occur on more than one valid input row (a Ray Data group-by)."""
    from ray.data.expressions import col

    valid = index.filter(expr=col("problem").is_null()).select_columns(["id"])
    counted = valid.groupby("id").count()
    dups = counted.filter(expr=col("count()") > 1).take_all()
    return pa.array(sorted(row["id"] for row in dups), pa.string())


def _count_work(index: Any, duplicates: pa.Array, done: pa.Array) -> dict[str, Any]:
    problems: collections.Counter[str] = collections.Counter()
    total = valid = already = 0
    for batch in index.iter_batches(batch_format="pyarrow", batch_size=65536):
        total += batch.num_rows
        problem = batch.column("problem")
        for reason, n in collections.Counter(p for p in problem.to_pylist() if p is not None).items():
            problems[reason] += n
        ok = pc.is_null(problem)
        ids = batch.column("id")
        dup = pc.fill_null(pc.is_in(ids, value_set=duplicates), False)
        problems[DUPLICATE_ID] += pc.sum(pc.and_(ok, dup)).as_py() or 0
        ok = pc.and_(ok, pc.invert(dup))
        valid += pc.sum(ok).as_py() or 0
        already += pc.sum(pc.and_(ok, pc.fill_null(pc.is_in(ids, value_set=done), False))).as_py() or 0
    problems = collections.Counter({k: v for k, v in problems.items() if v})
    return {
        "input": total,
        "valid": valid,
        "quarantined": sum(problems.values()),
        "problems": dict(problems),
        "already_done": already,
        "todo": valid - already,
    }


def _mark_duplicates(batch: pa.Table, duplicates: pa.Array) -> pa.Table:
    if len(duplicates) == 0:
        return batch
    dup = pc.fill_null(pc.is_in(batch.column("id"), value_set=duplicates), False)
    dup = pc.and_(dup, pc.is_null(batch.column("problem")))
    problem = pc.if_else(dup, pa.scalar(DUPLICATE_ID), batch.column("problem"))
    return batch.set_column(batch.schema.get_field_index("problem"), "problem", problem)


def _write_quarantine(rows: Any, duplicates: pa.Array, out: OutputLayout, expected: int) -> None:
    """Rewrite quarantine/ from this run's input (it is derived, so a rerun replaces it)."""
    storage.delete_dir(out.fs, out.quarantine)
    if expected == 0:
        return  # spare a pass over the corpus

    def bad_rows(batch: pa.Table) -> pa.Table:
        batch = _mark_duplicates(batch, duplicates)
        bad = batch.filter(pc.is_valid(batch.column("problem")))
        return bad.select(["id", "text", "problem", "source"]).rename_columns(["id", "text", "reason", "source"])

    rows.map_batches(bad_rows, batch_format="pyarrow").write_parquet(out.quarantine, filesystem=out.fs)


def _label(
    rows: Any,
    duplicates: pa.Array,
    done: pa.Array,
    config: Config,
    out: OutputLayout,
    todo: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Stream the rows still to label through the teacher actors; show progress."""
    import ray

    stats = {"rows": 0, "abstentions": 0, "prompt_tokens": 0, "completion_tokens": 0, "demos_dropped": 0,
             "seconds": 0.0}
    if todo == 0:
        return stats
    # Only a resumed run has committed ids to skip; a fresh run's actors then get no object-store
    # argument (one would keep them from restarting cleanly, ray-project/ray#53727).
    done_ref = ray.put(done) if len(done) else None

    def pending(batch: pa.Table) -> pa.Table:
        batch = _mark_duplicates(batch, duplicates)
        keep = pc.is_null(batch.column("problem"))
        if done_ref is not None:
            committed = ray.get(done_ref)
            keep = pc.and_(keep, pc.invert(pc.fill_null(pc.is_in(batch.column("id"), value_set=committed), False)))
        return batch.filter(keep).select(["id", "text", *(["demos"] if "demos" in batch.column_names else [])])

    summaries = rows.map_batches(pending, batch_format="pyarrow").map_batches(
        TeacherLabeler,
        fn_constructor_kwargs={"config": config, "data_fs": out.fs, "data_path": out.data},
        **engine_pool_options(config.teacher),
    )
    progress = Progress(todo, log)
    for batch in summaries.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            for key in stats:
                stats[key] += row[key]
            progress.update(row["rows"], row["completion_tokens"])
    progress.finish()
    stats["wall_seconds"] = progress.elapsed()
    return stats


class Progress:
    """Prints rows done, rates and an ETA at most every ``every`` seconds.

    Rates and the ETA are measured from the first finished batch on: before it
    the engines are still starting, and counting that time would make the
    first ETA absurd (hours for a job of minutes).
    """

    def __init__(self, total: int, log: Callable[[str], None], every: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self.total, self.log, self.every, self.clock = total, log, every, clock
        self.start = self.last = clock()
        self.rows = self.tokens = 0
        self.first: Optional[tuple[float, int, int]] = None  # (time, rows, tokens) at the first batch

    def elapsed(self) -> float:
        return self.clock() - self.start

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        now = self.clock()
        if self.first is None:
            self.first = (now, self.rows, self.tokens)
            self.log(f"[label] engines running after {now - self.start:.0f}s; first batch done")
            self.last = now
        elif now - self.last >= self.every:
            self.last = now
            self.log(self.line())

    def line(self) -> str:
        done = f"[label] {self.rows}/{self.total} rows ({100 * self.rows / max(self.total, 1):.0f}%)"
        if self.first is None:
            return f"{done} | engines starting ({self.elapsed():.0f}s)"
        since, rows0, tokens0 = self.first
        if self.rows == rows0:  # one batch done: no rate to measure yet
            return f"{done} | {self.elapsed():.0f}s"
        seconds = max(self.clock() - since, 1e-9)
        rate = (self.rows - rows0) / seconds
        eta = (self.total - self.rows) / rate
        return f"{done} | {rate:.1f} rows/s | {(self.tokens - tokens0) / seconds:.0f} completion tokens/s | ETA {eta:.0f}s"

    def finish(self) -> None:
        self.log(self.line())


def remove_duplicate_ids(out: OutputLayout) -> int:
    """Keep one row per id across committed shards; return how many were removed.

    The first shard in name order keeps an id; later shards are rewritten
    atomically without it. With deterministic shard names this finds nothing,
    but it makes "one row per id" a checked property rather than a hope.
    """
    counts = pc.value_counts(committed_ids(out))
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return 0
    seen: set[str] = set()
    removed = 0
    for file in storage.list_files(out.fs, out.data, (".parquet",)):
        table = pq.read_table(file, filesystem=out.fs)
        keep = []
        for row_id, is_repeated in zip(
            table.column("id").to_pylist(), pc.is_in(table.column("id"), value_set=repeated).to_pylist()
        ):
            keep.append(not is_repeated or row_id not in seen)
            if is_repeated:
                seen.add(row_id)
        if not all(keep):
            storage.write_parquet_atomic(out.fs, file, table.filter(pa.array(keep)))
            removed += keep.count(False)
            print(f"[label] removed {keep.count(False)} repeated id(s) from {file}", file=sys.stderr)
    return removed
