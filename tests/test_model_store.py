"""Publishing an exported model: replaced whole or not at all, and readers never take half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipeline import model_store, storage
from pipeline.config import StorageConfig


def make_model(folder: Path, version: str) -> Path:
    """A stand-in model folder: what matters here is which version each file holds."""
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_text(f"weights {version}")
    (folder / "tokenizer.json").write_text(f"tokenizer {version}")
    (folder / "sub" / "extra.txt").write_text(f"extra {version}")
    if version == "v1":
        (folder / "only-in-v1.txt").write_text("old")
    model_store.seal(folder, {"labels": ["a", "b"], "version": version})
    return folder


def versions(folder: Path) -> set[str]:
    """The versions the files of a fetched model come from (one, for a whole model)."""
    return {(folder / name).read_text().split()[-1] for name in ("model.safetensors", "tokenizer.json", "sub/extra.txt")}


def test_seal_lists_every_file_with_its_hash(tmp_path):
    meta = json.loads((make_model(tmp_path / "m", "v1") / model_store.META).read_text())
    assert set(meta["files"]) == {"model.safetensors", "tokenizer.json", "sub/extra.txt", "only-in-v1.txt"}
    assert meta["files"]["tokenizer.json"]["size"] == len("tokenizer v1")
    assert meta["version"] == "v1"


def test_local_publish_replaces_the_model_whole(tmp_path):
    local = pafs.LocalFileSystem()
    target = str(tmp_path / "run" / "model")
    model_store.publish(local, str(make_model(tmp_path / "v1", "v1")), local, target)
    assert versions(model_store.fetch(target, StorageConfig(), str(tmp_path / "dl"))) == {"v1"}
    model_store.publish(local, str(make_model(tmp_path / "v2", "v2")), local, target)
    fetched = model_store.fetch(target, StorageConfig(), str(tmp_path / "dl"))
    assert versions(fetched) == {"v2"} and not (fetched / "only-in-v1.txt").exists()
    assert sorted(os.listdir(tmp_path / "run")) == ["model"]  # no staging or old folder left


def test_a_crash_between_the_local_renames_leaves_the_new_model_readable_and_the_next_publish_finishes_it(tmp_path):
    local = pafs.LocalFileSystem()
    target = tmp_path / "run" / "model"
    model_store.publish(local, str(make_model(tmp_path / "v1", "v1")), local, str(target))
    # Staged whole, the old model renamed aside, then the crash: no model/ at all.
    model_store.publish(local, str(make_model(tmp_path / "v2", "v2")), local, str(tmp_path / "scratch"))
    os.rename(tmp_path / "scratch", str(target) + model_store.NEXT)
    os.rename(target, tmp_path / "run" / "model.old-crashed")
    assert versions(model_store.fetch(str(target), StorageConfig(), str(tmp_path / "dl"), attempts=1)) == {"v2"}
    assert model_store.finish_interrupted(local, str(target))
    assert versions(target) == {"v2"} and not Path(str(target) + model_store.NEXT).exists()


def test_s3_publish_and_a_reader_of_a_half_swapped_model(s3_endpoint, s3_bucket, tmp_path):
    """On S3 the swap copies file by file. A reader meeting a model with some files new and some old takes the
    whole staged copy instead; without one it fails naming the file, never loading the mix."""
    config = StorageConfig(endpoint_url=s3_endpoint, region="us-east-1")
    uri = f"s3://{s3_bucket}/run/model"
    fs, path = storage.resolve(uri, config)
    local = pafs.LocalFileSystem()
    model_store.publish(local, str(make_model(tmp_path / "v1", "v1")), fs, path)
    model_store.publish(local, str(make_model(tmp_path / "v2", "v2")), fs, path)
    fetched = model_store.fetch(uri, config, str(tmp_path / "dl"))
    assert versions(fetched) == {"v2"} and not (fetched / "only-in-v1.txt").exists()
    assert storage.list_files(fs, path + model_store.NEXT) == []

    # A swap to v3 cut after its first file: model/ mixes v3 weights with v2's metadata and files.
    v3 = make_model(tmp_path / "v3", "v3")
    staged = path + model_store.NEXT
    for name in ("model.safetensors", "tokenizer.json", "sub/extra.txt", model_store.META):
        pafs.copy_files(str(v3 / name), storage.join(staged, name), source_filesystem=local, destination_filesystem=fs)
    pafs.copy_files(str(v3 / "model.safetensors"), storage.join(path, "model.safetensors"),
                    source_filesystem=local, destination_filesystem=fs)
    assert versions(model_store.fetch(uri, config, str(tmp_path / "dl"), attempts=1)) == {"v3"}

    storage.delete_dir(fs, staged)  # and without the staged copy: refused, not loaded
    with pytest.raises(model_store.ModelUnavailable, match="model.safetensors does not match raydistill.json"):
        model_store.fetch(uri, config, str(tmp_path / "dl"), attempts=1, wait_s=0)
