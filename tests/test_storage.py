import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pipeline import storage
from pipeline.config import StorageConfig


def test_local_resolve_and_atomic_write(tmp_path):
    fs, root = storage.resolve(str(tmp_path / "out"), StorageConfig())
    assert isinstance(fs, pafs.LocalFileSystem) and root == str(tmp_path / "out")
    storage.write_parquet_atomic(fs, storage.join(root, "data", "part-1.parquet"), pa.table({"id": ["a"]}))
    storage.write_json(fs, storage.join(root, "manifest.json"), {"k": 1})
    assert storage.read_json(fs, storage.join(root, "manifest.json")) == {"k": 1}
    # no temporary files are left behind
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == ["part-1.parquet"]
    assert storage.read_parquet(fs, storage.join(root, "data")).column("id").to_pylist() == ["a"]


def test_list_files_skips_markers_and_filters_suffix(tmp_path):
    for name in ["a.parquet", "b.jsonl", "_SUCCESS", ".tmp-x.parquet", "_tmp/c.parquet", "sub/d.parquet"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    fs = pafs.LocalFileSystem()
    found = storage.list_files(fs, str(tmp_path), (".parquet",))
    assert found == [str(tmp_path / "a.parquet"), str(tmp_path / "sub" / "d.parquet")]
    assert storage.list_files(fs, str(tmp_path / "b.jsonl")) == [str(tmp_path / "b.jsonl")]
    assert storage.list_files(fs, str(tmp_path / "missing")) == []


def test_s3_round_trip(s3_endpoint, s3_bucket):
    config = StorageConfig(endpoint_url=s3_endpoint, region="us-east-1")
    fs, root = storage.resolve(f"s3://{s3_bucket}/run/", config)
    assert root == f"{s3_bucket}/run"
    storage.write_parquet_atomic(fs, storage.join(root, "data", "part-1.parquet"), pa.table({"id": ["a", "b"]}))
    storage.write_json(fs, storage.join(root, "report.json"), {"rows": 2})
    assert storage.read_parquet(fs, storage.join(root, "data")).num_rows == 2
    assert storage.read_json(fs, storage.join(root, "report.json")) == {"rows": 2}
    assert storage.list_files(fs, root) == [f"{root}/data/part-1.parquet", f"{root}/report.json"]
    storage.delete_dir(fs, storage.join(root, "data"))
    assert not storage.exists(fs, storage.join(root, "data", "part-1.parquet"))
    with pytest.raises(FileNotFoundError):
        storage.read_parquet(fs, storage.join(root, "data"))
