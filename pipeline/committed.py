"""Exactly-once output folders, shared by the jobs that write one row per input id (labelling, prediction).

Layout under an output root (local or s3://)::

    manifest.json          what the output holds (a rerun with other settings is refused)
    data/part-*.parquet    committed rows, a file per batch, named by the ids it holds
    quarantine/*.parquet   input rows that cannot be used (bad id, text, repeated id), with the reason
    failed/part-*.parquet  rows the job could not process, with the error (labelling)
    attempts/*.json        batches begun and not yet committed (labelling)
    report.json            the run's report

Every file is committed atomically under a name derived from the ids it holds
(:func:`shard_name`), and a run first indexes the ids already committed
(:mod:`pipeline.idindex`, read by Ray tasks and kept in the object store) and
skips them (:func:`scan`, :func:`pending`). A killed job started again
therefore processes only what is missing, and a retried batch overwrites its
own file. :func:`remove_duplicate_ids` checks "one row per id" at the end.
Nothing proportional to the corpus reaches the driver.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import sys
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import idindex, storage

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


def shard_name(ids: list[str]) -> str:
    """Deterministic shard name from the ids it holds: a retried batch overwrites
    its own earlier shard instead of adding a second copy of its rows."""
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:24]
    return f"part-{digest}.parquet"


def committed_files(out: OutputLayout) -> list[str]:
    """The committed parquet files (their names only: one per ``teacher.commit_rows`` rows)."""
    return storage.list_files(out.fs, out.data, (".parquet",))


def failed_files(out: OutputLayout) -> list[str]:
    """The files of rows the teacher could not label (failed/)."""
    return storage.list_files(out.fs, out.failed, (".parquet",))


def committed_index(out: OutputLayout, also: tuple[OutputLayout, ...] = ()) -> tuple[Optional[Any], dict[str, Any]]:
    """An :class:`~pipeline.idindex.IdIndex` of the ids done (its ``ObjectRef``, or None) and a summary:
    the committed ids and those in failed/, which a rerun does not send to the teacher again, and the
    ids committed in the outputs ``also`` (on the same filesystem: ``data.skip_labelled``).

    The files are read in parallel by Ray tasks, ``id`` column only.
    """
    others = [file for other in also for file in committed_files(other)]
    return idindex.build_from_files(out.fs, committed_files(out) + failed_files(out) + others)


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


def scan(rows: Any, committed_ref: Optional[Any]) -> tuple[dict[str, Any], pa.Array]:
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


def mark_duplicates(batch: pa.Table, duplicates: pa.Array) -> pa.Table:
    if len(duplicates) == 0:
        return batch
    dup = pc.fill_null(pc.is_in(batch.column("id"), value_set=duplicates), False)
    dup = pc.and_(dup, pc.is_null(batch.column("problem")))
    problem = pc.if_else(dup, pa.scalar(DUPLICATE_ID), batch.column("problem"))
    return batch.set_column(batch.schema.get_field_index("problem"), "problem", problem)


def write_quarantine(rows: Any, duplicates: pa.Array, out: OutputLayout, expected: int) -> None:
    """Rewrite quarantine/ from this run's input (it is derived, so a rerun replaces it)."""
    storage.delete_dir(out.fs, out.quarantine)
    if expected == 0:
        return  # spare a pass over the corpus

    def bad_rows(batch: pa.Table) -> pa.Table:
        batch = mark_duplicates(batch, duplicates)
        bad = batch.filter(pc.is_valid(batch.column("problem")))
        return bad.select(["id", "text", "problem", "source"]).rename_columns(["id", "text", "reason", "source"])

    rows.map_batches(bad_rows, batch_format="pyarrow").write_parquet(out.quarantine, filesystem=out.fs)


def pending(batch: pa.Table, duplicates: pa.Array, committed_ref: Optional[Any]) -> pa.Table:
    """The rows of ``batch`` still to label: valid, not a duplicated id, not committed."""
    batch = mark_duplicates(batch, duplicates)
    batch = batch.filter(pc.is_null(batch.column("problem")))
    if committed_ref is not None and batch.num_rows:
        batch = batch.filter(pa.array(~idindex.Loaded.get(committed_ref).contains(batch.column("id"))))
    return batch.select(["id", "text", *(["demos"] if "demos" in batch.column_names else [])])


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
