"""The labelling job: corpus -> Ray Data -> vLLM teacher actors -> labelled parquet.

Output layout under ``data.output`` (local or s3://)::

    manifest.json          labels, prompt hash, teacher and sampling settings
    data/part-*.parquet    labelled rows (schemas.LABELLED), ``teacher.commit_rows`` rows a file
    quarantine/*.parquet   input rows that cannot be labelled (bad id, text, ...), with the reason
    failed/part-*.parquet  rows the teacher could not label (the engine rejected them, or they killed
                           it), with the error (schemas.FAILED); a rerun skips them, and deleting
                           the folder makes the next run try them again
    attempts/*.json        batches begun and not yet committed (see teacher.plan_run)
    report.json            the run's report

Exactly once: every file is committed atomically under a name derived from
the ids it holds, and a run first indexes the ids already committed
(:mod:`pipeline.idindex`, read by Ray tasks and kept in the object store)
and skips them. A killed job started again therefore labels only what is
missing, and a retried batch overwrites its own file. A crash loses at most
the batches in flight: ``teacher.max_concurrent_batches`` x
``teacher.commit_rows`` rows of work per actor. A final check over the
committed ids removes any second copy of an id (none is expected) before the
report.

Nothing proportional to the corpus reaches the driver: it holds object refs,
counts and the (small) list of duplicated input ids.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import threading
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import idindex, prompts, reports, storage
from pipeline.cluster import init_ray
from pipeline.config import Config, ConfigError
from pipeline.corpus import open_corpus, read_corpus
from pipeline.teacher import PromptRenderer, TeacherLabeler, injected_faults, labeling_pool_options

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
    def failed(self) -> str:
        return storage.join(self.root, "failed")

    @property
    def attempts(self) -> str:
        return storage.join(self.root, "attempts")

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
    with storage.OutputLease(out.fs, out.root, config.data.output, "data.output", "labelling job"):
        return _label_into(out, corpus, config, started, smoke, log)


def _label_into(out: OutputLayout, corpus: Any, config: Config, started: float, smoke: bool,
                log: Callable[[str], None]) -> dict[str, Any]:
    init_ray()
    rows = read_corpus(corpus, config.task.label_names)
    committed_ref, _ = committed_index(out)
    counts, duplicates = _scan(rows, committed_ref)
    log(
        f"[label] {counts['input']} rows: {counts['valid']} to label, {counts['quarantined']} quarantined, "
        f"{counts['already_done']} already committed, {counts['todo']} left"
    )

    _write_quarantine(rows, duplicates, out, expected=counts["quarantined"])
    run_stats = _label(rows, duplicates, committed_ref, config, out, counts["todo"], log)
    del committed_ref  # the object store may free it

    removed, _ = remove_duplicate_ids(out)
    failed_total = idindex.summarize_files(out.fs, failed_files(out))["rows"]
    report = reports.labeling_report(
        out,
        config,
        input_rows=counts["input"],
        quarantine=counts["problems"],
        already_done=counts["already_done"],
        run=run_stats,
        duplicates_removed=removed,
        failed_total=failed_total,
        wall_seconds=time.time() - started,
        smoke=smoke,
    )
    storage.write_json(out.fs, out.report, report)
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


def committed_files(out: OutputLayout) -> list[str]:
    """The committed parquet files (their names only: one per ``teacher.commit_rows`` rows)."""
    return storage.list_files(out.fs, out.data, (".parquet",))


def failed_files(out: OutputLayout) -> list[str]:
    """The files of rows the teacher could not label (failed/)."""
    return storage.list_files(out.fs, out.failed, (".parquet",))


def committed_index(out: OutputLayout) -> tuple[Optional[Any], dict[str, Any]]:
    """An :class:`~pipeline.idindex.IdIndex` of the ids done (its ``ObjectRef``, or None) and a summary:
    the committed ids and those in failed/, which a rerun does not send to the teacher again.

    The files are read in parallel by Ray tasks, ``id`` column only.
    """
    return idindex.build_from_files(out.fs, committed_files(out) + failed_files(out))


def _scan_block(batch: pa.Table, committed_ref: Optional[Any]) -> pa.Table:
    """Per input row: the id's hash (valid rows), its problem, and whether it is committed."""
    problem = batch.column("problem")
    valid = pc.is_null(problem).to_numpy(zero_copy_only=False)
    ids = batch.column("id").filter(pa.array(valid))
    hashes = np.zeros(batch.num_rows, dtype=np.uint64)
    hashes[valid] = valid_hashes = idindex.hash_ids(ids)
    committed = np.zeros(batch.num_rows, dtype=bool)
    if committed_ref is not None:
        committed[valid] = idindex.Loaded.get(committed_ref).contains(ids, valid_hashes)
    return pa.table({"hash": pa.array(hashes, mask=~valid), "problem": problem, "committed": committed})


def _scan_summary(*tables: pa.Table) -> dict[str, Any]:
    """Counts over the scanned corpus and the hashes shared by more than one valid row."""
    problems: collections.Counter[str] = collections.Counter()
    total = valid = committed = 0
    hashes = []
    for table in tables:
        total += table.num_rows
        for reason, n in zip(*pc.value_counts(table.column("problem").drop_null()).flatten()):
            problems[reason.as_py()] += n.as_py()
        ok = pc.is_valid(table.column("hash"))
        valid += pc.sum(ok).as_py() or 0
        committed += pc.sum(table.column("committed")).as_py() or 0
        hashes.append(table.column("hash").drop_null().to_numpy())
    shared = idindex.repeated_hashes(np.concatenate(hashes) if hashes else np.array([], np.uint64))
    return {"input": total, "problems": dict(problems), "valid": valid, "committed": committed, "shared": shared}


def _rows_with_hashes(batch: pa.Table, shared: np.ndarray, committed_ref: Optional[Any]) -> pa.Table:
    """Valid rows whose id hash is in ``shared``: their id and whether it is committed."""
    batch = batch.filter(pc.is_null(batch.column("problem")))
    ids = batch.column("id")
    keep = np.isin(idindex.hash_ids(ids), shared)
    ids = ids.filter(pa.array(keep))
    committed = (idindex.Loaded.get(committed_ref).contains(ids) if committed_ref is not None
                 else np.zeros(len(ids), dtype=bool))
    return pa.table({"id": ids, "committed": committed})


def _scan(rows: Any, committed_ref: Optional[Any]) -> tuple[dict[str, Any], pa.Array]:
    """Counts of the work (input, quarantined and why, already committed, left) and the duplicated ids.

    One pass hashes every valid id and looks it up in the committed index (in
    Ray Data tasks); one Ray task sorts the hashes to find ids that may occur
    twice. Only if some hash does occur twice does a second pass fetch those
    rows' ids, so duplicates are decided on the ids themselves. The driver
    receives counts and the duplicated ids.
    """
    import ray

    refs = rows.map_batches(_scan_block, batch_format="pyarrow", fn_kwargs={"committed_ref": committed_ref}
                            ).to_arrow_refs()
    summary = ray.get(ray.remote(_scan_summary).remote(*refs))
    del refs
    problems = collections.Counter(summary["problems"])
    duplicates, duplicate_rows, duplicate_committed = pa.array([], pa.string()), 0, 0
    if len(summary["shared"]):
        found = rows.map_batches(
            _rows_with_hashes, batch_format="pyarrow",
            fn_kwargs={"shared": summary["shared"], "committed_ref": committed_ref},
        ).take_all()
        seen = collections.Counter(row["id"] for row in found)
        repeated = {row_id for row_id, n in seen.items() if n > 1}
        duplicates = pa.array(sorted(repeated), pa.string())
        duplicate_rows = sum(seen[row_id] for row_id in repeated)
        duplicate_committed = sum(1 for row in found if row["id"] in repeated and row["committed"])
    if duplicate_rows:
        problems[DUPLICATE_ID] += duplicate_rows
    valid = summary["valid"] - duplicate_rows
    already = summary["committed"] - duplicate_committed
    counts = {
        "input": summary["input"],
        "valid": valid,
        "quarantined": sum(problems.values()),
        "problems": dict(problems),
        "already_done": already,
        "todo": valid - already,
    }
    return counts, duplicates


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


def _pending(batch: pa.Table, duplicates: pa.Array, committed_ref: Optional[Any]) -> pa.Table:
    """The rows of ``batch`` still to label: valid, not a duplicated id, not committed."""
    batch = _mark_duplicates(batch, duplicates)
    batch = batch.filter(pc.is_null(batch.column("problem")))
    if committed_ref is not None and batch.num_rows:
        batch = batch.filter(pa.array(~idindex.Loaded.get(committed_ref).contains(batch.column("id"))))
    return batch.select(["id", "text", *(["demos"] if "demos" in batch.column_names else [])])


class _Board:
    """Rows and completion tokens the teacher actors have finished (committed or not yet)."""

    def __init__(self) -> None:
        self.rows = self.tokens = 0

    def add(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens

    def read(self) -> tuple[int, int]:
        return self.rows, self.tokens


def _label(
    rows: Any,
    duplicates: pa.Array,
    committed_ref: Optional[Any],
    config: Config,
    out: OutputLayout,
    todo: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Stream the rows still to label through the teacher actors; show progress.

    The pending rows are regrouped into blocks of ``teacher.commit_rows``
    (Ray Data's streaming repartition) so that each actor batch, and each
    committed file, holds that many rows whatever the input's block sizes.
    """
    import ray

    stats = {"rows": 0, "failed": 0, "abstentions": 0, "prompt_tokens": 0, "completion_tokens": 0,
             "demos_dropped": 0, "seconds": 0.0}
    if todo == 0:
        return stats
    teacher = config.teacher
    # Markers of batches an earlier job left unfinished: this job forms its batches anew.
    storage.delete_dir(out.fs, out.attempts)
    board = ray.remote(num_cpus=0)(_Board).remote()
    pending = rows.map_batches(
        _pending, batch_format="pyarrow", fn_kwargs={"duplicates": duplicates, "committed_ref": committed_ref}
    ).repartition(target_num_rows_per_block=teacher.commit_rows, strict=True)
    summaries = pending.map_batches(
        TeacherLabeler,
        fn_constructor_kwargs={"config": config, "data_fs": out.fs, "data_path": out.data, "progress": board,
                               "failed_path": out.failed, "attempts_path": out.attempts,
                               "faults": injected_faults()},
        **labeling_pool_options(teacher),
    )
    progress = Progress(todo, log)
    watcher = _ProgressWatcher(board, progress)
    try:
        for batch in summaries.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                for key in stats:
                    stats[key] += row[key]
                progress.committed += row["rows"] + row["failed"]
    finally:
        watcher.stop()
    progress.finish()
    stats["wall_seconds"] = progress.elapsed()
    return stats


class _ProgressWatcher:
    """Polls the actors' progress board from a driver thread and feeds :class:`Progress`."""

    def __init__(self, board: Any, progress: "Progress", every: float = 1.0):
        self.board, self.progress, self.every = board, progress, every
        self.seen = (0, 0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="label-progress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self._poll()

    def _poll(self) -> None:
        import ray

        rows, tokens = ray.get(self.board.read.remote())
        if rows > self.seen[0]:
            self.progress.update(rows - self.seen[0], tokens - self.seen[1])
            self.seen = (rows, tokens)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        try:
            self._poll()  # the last rows the actors sent
        except Exception:  # noqa: BLE001 - progress must not hide the job's own outcome
            pass


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
        self.rows = self.tokens = 0  # labelled by the engines
        self.committed = 0  # of which written to the output
        self.first: Optional[tuple[float, int, int]] = None  # (time, rows, tokens) at the first rows

    def elapsed(self) -> float:
        return self.clock() - self.start

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        now = self.clock()
        if self.first is None:
            self.first = (now, self.rows, self.tokens)
            self.log(f"[label] engines running after {now - self.start:.0f}s; first rows labelled")
            self.last = now
        elif now - self.last >= self.every:
            self.last = now
            self.log(self.line())

    def line(self) -> str:
        shown = min(self.rows, self.total)  # a retried batch counts its rows twice
        done = (f"[label] {shown}/{self.total} rows ({100 * shown / max(self.total, 1):.0f}%, "
                f"{self.committed} committed)")
        if self.first is None:
            return f"{done} | engines starting ({self.elapsed():.0f}s)"
        since, rows0, tokens0 = self.first
        if self.rows == rows0:  # one update so far: no rate to measure yet
            return f"{done} | {self.elapsed():.0f}s"
        seconds = max(self.clock() - since, 1e-9)
        rate = (self.rows - rows0) / seconds
        eta = max(self.total - self.rows, 0) / rate
        return f"{done} | {rate:.1f} rows/s | {(self.tokens - tokens0) / seconds:.0f} completion tokens/s | ETA {eta:.0f}s"

    def finish(self) -> None:
        self.log(self.line())


def _files_holding(fs: Any, files: list[str], ids: pa.Array) -> list[str]:
    """Those of ``files`` that hold any of ``ids``."""
    return [f for f in files if pc.any(pc.is_in(pq.read_table(f, filesystem=fs, columns=["id"]).column("id"),
                                                 value_set=ids)).as_py()]


def remove_duplicate_ids(out: OutputLayout) -> tuple[int, int]:
    """Keep one row per id across committed files; return (rows removed, rows committed).

    The committed ids are read and hashed by Ray tasks and sorted in one
    task, as at the start of a run but keeping only the counts; only the files holding a repeated id are read again
    and rewritten atomically without it, the first file in name order
    keeping the id. With deterministic file names this finds nothing, but it
    makes "one row per id" a checked property rather than a hope.
    """
    import ray

    from pipeline.cluster import map_files

    summary = idindex.summarize_files(out.fs, committed_files(out))
    repeated = summary["repeated"]
    if not repeated:
        return 0, summary["rows"]
    wanted = pa.array(sorted(repeated), pa.string())
    holders = {file for group in ray.get(map_files(out.fs, committed_files(out), _files_holding, wanted))
               for file in group}
    seen: set[str] = set()
    removed = 0
    for file in sorted(holders):
        table = pq.read_table(file, filesystem=out.fs)
        in_repeated = pc.is_in(table.column("id"), value_set=wanted).to_pylist()
        keep = []
        for row_id, is_repeated in zip(table.column("id").to_pylist(), in_repeated):
            keep.append(not is_repeated or row_id not in seen)
            if is_repeated:
                seen.add(row_id)
        if not all(keep):
            storage.write_parquet_atomic(out.fs, file, table.filter(pa.array(keep)))
            removed += keep.count(False)
            print(f"[label] removed {keep.count(False)} repeated id(s) from {file}", file=sys.stderr)
    return removed, summary["rows"] - removed
