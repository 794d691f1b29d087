"""The committed-id index: exact lookups, hash collisions, ids past 2 GiB, loaded once per process."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline import idindex


def index_of(ids: list[str]) -> idindex.IdIndex:
    return idindex.merge(idindex.hashed_ids(pa.table({"id": pa.array(ids)})))[0]


def test_contains_is_exact_and_keeps_order():
    index = index_of([f"doc-{i}" for i in range(1000)])
    query = pa.array(["doc-5", "doc-1000", "doc-999", "", "doc-5"])
    assert index.contains(query).tolist() == [True, False, True, False, True]
    assert index_of([]).contains(query).tolist() == [False] * 5


def test_merge_counts_rows_and_reports_repeated_ids():
    tables = [idindex.hashed_ids(pa.table({"id": pa.array(chunk)})) for chunk in (["a", "b"], ["b", "c", "b"])]
    index, summary = idindex.merge(*tables)
    assert summary == {"rows": 5, "repeated": {"b": 3}}
    assert index.ids.type == pa.large_string()
    assert np.all(np.diff(index.hashes.astype(np.float64)) >= 0)  # sorted


def test_a_hash_collision_never_makes_one_id_pass_for_another(monkeypatch):
    # Force every id onto one of two hash values: lookups must fall back to comparing ids.
    monkeypatch.setattr(idindex, "hash_ids", lambda ids: np.array([len(str(i)) % 2 for i in ids.to_pylist()],
                                                                  dtype=np.uint64))
    index = index_of(["aa", "bb", "c"])  # "aa" and "bb" share a hash
    assert index.contains(pa.array(["bb", "aa", "cc", "c", "d"])).tolist() == [True, True, False, True, False]
    assert idindex.repeated_ids(index_of(["aa", "bb", "aa"])) == {"aa": 2}  # "bb" shares the hash only


def test_ids_past_two_gibibytes(tmp_path):
    """Nine distinct 256 MiB ids (2.25 GiB in all: past the 32-bit offsets of pa.string()).

    They are windows over one shared buffer, so the test needs about one copy
    of the total, not one per id.
    """
    size, count = 256 << 20, 9
    rng = np.random.default_rng(0)
    data = rng.integers(97, 123, size + count, dtype=np.uint8).tobytes()  # letters: valid UTF-8
    buffer = pa.py_buffer(data)

    def one_id(i: int) -> pa.Array:
        offsets = pa.array([i, i + size], pa.int64()).buffers()[1]
        return pa.LargeStringArray.from_buffers(1, offsets, buffer)

    tables = [idindex.hashed_ids(pa.table({"id": one_id(i)})) for i in range(count)]
    index, summary = idindex.merge(*tables)
    assert summary == {"rows": count, "repeated": {}}
    assert index.ids.nbytes > 2**31
    found = index.contains(pa.concat_arrays([one_id(3), pa.array(["short"], pa.large_string())]))
    assert found.tolist() == [True, False]


def test_an_index_is_fetched_once_per_process_not_per_batch(ray_cluster):
    import ray

    from pipeline.committed import pending as _pending

    ref = ray.put(index_of([f"doc-{i}" for i in range(0, 1000, 2)]))
    before = idindex.Loaded.loads
    kept = []
    for start in range(0, 1000, 50):  # twenty batches
        batch = pa.table({"id": [f"doc-{i}" for i in range(start, start + 50)],
                          "text": ["t"] * 50, "problem": pa.nulls(50, pa.string())})
        kept += _pending(batch, pa.array([], pa.string()), ref).column("id").to_pylist()
    assert idindex.Loaded.loads - before == 1
    assert kept == [f"doc-{i}" for i in range(1, 1000, 2)]


def test_committed_files_are_indexed_whatever_their_id_column_nullability(tmp_path, ray_cluster):
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    import ray

    nullable = pa.table({"id": pa.array(["a", "b"])})
    required = pa.Table.from_arrays([pa.array(["c", "b"])], schema=pa.schema([pa.field("id", pa.string(), False)]))
    pq.write_table(nullable, tmp_path / "part-1.parquet")
    pq.write_table(required, tmp_path / "part-2.parquet")
    files = [str(tmp_path / "part-1.parquet"), str(tmp_path / "part-2.parquet")]
    ref, summary = idindex.build_from_files(pafs.LocalFileSystem(), files)
    assert summary == {"rows": 4, "repeated": {"b": 2}}
    assert ray.get(ref).contains(pa.array(["a", "c", "d"])).tolist() == [True, True, False]
    assert idindex.build_from_files(pafs.LocalFileSystem(), []) == (None, {"rows": 0, "repeated": {}})
