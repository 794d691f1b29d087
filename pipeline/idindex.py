"""Exact membership tests against millions of ids, built and used off the driver.

An :class:`IdIndex` holds a set of ids sorted by a 64-bit hash of each id,
with the ids themselves in the same order. Looking up a batch of ids is a
binary search over the hashes (``np.searchsorted``) followed by an exact
comparison of the ids the hashes point at, so a hash collision can never make
one id pass for another: two ids with the same hash sit side by side and both
are compared. The lookup structure is the sorted array itself: nothing is
rebuilt per batch, and a worker process gets the index from Ray's object
store once (:func:`load`), zero-copy.

Memory: 8 bytes of hash plus the id's bytes and an 8-byte offset per id
(``large_string``, so no 2 GiB limit): about 520 MB for 10M UUIDs, held in
Ray's object store, never on the driver. The driver only ever holds an
``ObjectRef`` and counts.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def hash_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each id (SipHash via pandas, fixed key): ``uint64``, one per id."""
    from pandas.util import hash_array

    values = ids.to_numpy(zero_copy_only=False) if len(ids) else np.array([], dtype=object)
    return hash_array(values.astype(object, copy=False), categorize=False)


@dataclasses.dataclass(frozen=True)
class IdIndex:
    hashes: np.ndarray  # uint64, sorted
    ids: pa.Array  # large_string, ids[i] has hash hashes[i]

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, ids: pa.Array | pa.ChunkedArray, hashes: Optional[np.ndarray] = None) -> np.ndarray:
        """For each of ``ids`` (no nulls), whether it is in the index: a boolean array.

        ``hashes``: the ids' :func:`hash_ids`, where the caller has them already.
        """
        return self.positions(ids, hashes) >= 0

    def positions(self, ids: pa.Array | pa.ChunkedArray, hashes: Optional[np.ndarray] = None) -> np.ndarray:
        """For each of ``ids`` (no nulls), its position in the index, or -1: an ``int64`` array."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
        found = np.full(len(ids), -1, dtype=np.int64)
        if len(self) == 0 or len(ids) == 0:
            return found
        wanted = hash_ids(ids) if hashes is None else hashes
        first = np.searchsorted(self.hashes, wanted)
        at = np.minimum(first, len(self) - 1)
        hit = np.nonzero(self.hashes[at] == wanted)[0]
        if len(hit) == 0:
            return found
        ids = ids.cast(pa.large_string())
        same = pc.equal(ids.take(pa.array(hit)), self.ids.take(pa.array(at[hit]))).to_numpy(zero_copy_only=False)
        found[hit[same]] = at[hit[same]]
        for row in hit[~same]:  # a hash shared by other ids: compare along its run
            position = at[row] + 1
            while position < len(self) and self.hashes[position] == wanted[row]:
                if self.ids[position].as_py() == ids[row].as_py():
                    found[row] = position
                    break
                position += 1
        return found


def hashed_ids(batch: pa.Table) -> pa.Table:
    """``map_batches`` step: a table's ``id`` column with its hashes, ready for :func:`merge`."""
    ids = batch.column("id")
    return pa.table({"hash": pa.array(hash_ids(ids), pa.uint64()), "id": ids.cast(pa.large_string())})


def merge(*tables: pa.Table) -> tuple[IdIndex, dict[str, Any]]:
    """The index of every id in ``tables`` (from :func:`hashed_ids`), and a summary.

    The summary is small: ``rows`` and ``repeated`` (each id held more than
    once, with its count), so a caller can check "one row per id".
    """
    table = pa.concat_tables(tables) if tables else pa.table({"hash": pa.array([], pa.uint64()),
                                                               "id": pa.array([], pa.large_string())})
    index, _ = sorted_by_hash(table.column("id"), table.column("hash").to_numpy())
    return index, {"rows": len(index), "repeated": repeated_ids(index)}


def sorted_by_hash(ids: pa.ChunkedArray, hashes: np.ndarray) -> tuple[IdIndex, np.ndarray]:
    """The :class:`IdIndex` of ``ids`` (their :func:`hash_ids` given) and the order it put them in, so
    that rows kept beside the ids can be taken in the same order."""
    order = np.argsort(hashes, kind="stable")
    return IdIndex(hashes[order], ids.cast(pa.large_string()).take(pa.array(order)).combine_chunks()), order


def repeated_ids(index: IdIndex) -> dict[str, int]:
    """Ids held more than once, with their counts (only runs of equal hashes are compared)."""
    if len(index) < 2:
        return {}
    same = np.nonzero(index.hashes[1:] == index.hashes[:-1])[0]
    if len(same) == 0:
        return {}
    positions = np.unique(np.concatenate([same, same + 1]))
    runs: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for position in positions:
        runs[int(index.hashes[position])][index.ids[position].as_py()] += 1
    return {row_id: n for counter in runs.values() for row_id, n in counter.items() if n > 1}


def repeated_hashes(hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once in ``hashes`` (sorted, unique)."""
    if len(hashes) < 2:
        return np.array([], dtype=np.uint64)
    ordered = np.sort(hashes)
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def hashed_ids_of_files(fs: Any, files: list[str]) -> pa.Table:
    """The ``id`` column of parquet ``files`` with its hashes (one task's share of :func:`build_from_files`)."""
    import pyarrow.parquet as pq

    # Chunks, not tables: files written by other versions may differ in the column's nullability.
    chunks = [chunk.cast(pa.large_string()) for f in files
              for chunk in pq.read_table(f, filesystem=fs, columns=["id"]).column("id").chunks]
    return hashed_ids(pa.table({"id": pa.chunked_array(chunks, pa.large_string())}))


def build_from_files(fs: Any, files: list[str]) -> tuple[Optional[Any], dict[str, Any]]:
    """Index the ids of parquet ``files``; returns ``(ObjectRef of IdIndex or None, summary)``.

    Reading and hashing run in Ray tasks (a group of files each), the sort in
    one Ray task; the driver gets refs and the small summary, never the ids.
    """
    import ray

    from pipeline.cluster import map_files

    refs = map_files(fs, files, hashed_ids_of_files)
    if not refs:
        return None, {"rows": 0, "repeated": {}}
    index_ref, summary_ref = ray.remote(num_returns=2)(merge).remote(*refs)
    summary = ray.get(summary_ref)
    return (index_ref if summary["rows"] else None), summary


def summarize_files(fs: Any, files: list[str]) -> dict[str, Any]:
    """:func:`build_from_files`'s summary alone: the index is sorted in its task and dropped
    there, never stored in the object store (the end-of-run check needs only the counts)."""
    import ray

    from pipeline.cluster import map_files

    refs = map_files(fs, files, hashed_ids_of_files)
    if not refs:
        return {"rows": 0, "repeated": {}}
    return ray.get(ray.remote(_merged_summary).remote(*refs))


def _merged_summary(*tables: pa.Table) -> dict[str, Any]:
    return merge(*tables)[1]


class Loaded:
    """The indexes (or lookups holding one, as FreeAL's merge; or the small objects a step's tasks all
    read, as the filter's candidate index and the select's demos) this worker process has fetched, by
    ``ObjectRef``: each is fetched once.

    ``loads`` counts fetches, so a test can check that a lookup is never
    rebuilt per batch.
    """

    _indexes: dict[str, IdIndex] = {}
    loads = 0

    @classmethod
    def get(cls, ref: Any) -> IdIndex:
        import ray

        key = ref.hex()
        if key not in cls._indexes:
            cls._indexes.clear()  # one job's index at a time per process
            cls._indexes[key] = ray.get(ref)
            cls.loads += 1
        return cls._indexes[key]
