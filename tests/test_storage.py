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


def test_an_output_held_by_a_live_job_is_refused_and_a_dead_holder_s_lease_is_taken_over(tmp_path):
    import json
    import subprocess
    import sys
    import time

    fs, root = pafs.LocalFileSystem(), str(tmp_path / "out")
    first = storage.OutputLease(fs, root, "out/", "data.output", "labelling job", settle_s=0)
    with first:
        holder = json.loads((tmp_path / "out" / "lease.json").read_text())
        with pytest.raises(storage.LeaseHeld, match=r"data.output: out/ is in use by a running labelling job \(host "):
            storage.OutputLease(fs, root, "out/", "data.output", "labelling job", settle_s=0).acquire()
    assert not (tmp_path / "out" / "lease.json").exists()  # released

    # A holder that died on this machine (its pid gone) without releasing: taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "out" / "lease.json").write_text(json.dumps({**holder, "pid": dead.pid, "renewed": time.time()}))
    with storage.OutputLease(fs, root, "out/", "data.output", "labelling job", settle_s=0):
        pass
    # A holder elsewhere that stopped renewing: taken over after the time to live.
    stale = {**holder, "host": "another-node", "renewed": time.time() - 200}
    (tmp_path / "out" / "lease.json").write_text(json.dumps(stale))
    with storage.OutputLease(fs, root, "out/", "data.output", "labelling job", ttl_s=180, settle_s=0):
        pass
    (tmp_path / "out" / "lease.json").write_text(json.dumps({**stale, "renewed": time.time() - 10}))
    with pytest.raises(storage.LeaseHeld, match="host another-node, pid .* renewed 10s ago"):
        storage.OutputLease(fs, root, "out/", "data.output", "labelling job", settle_s=0).acquire()


def test_a_lease_is_renewed_while_its_job_runs(tmp_path):
    import json
    import time

    fs, root = pafs.LocalFileSystem(), str(tmp_path)
    with storage.OutputLease(fs, root, "x", "k", "job", renew_s=0.05, settle_s=0):
        first = json.loads((tmp_path / "lease.json").read_text())["renewed"]
        time.sleep(0.3)
        assert json.loads((tmp_path / "lease.json").read_text())["renewed"] > first
