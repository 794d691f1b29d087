"""Exported models: published so that a crash never leaves no model and a reader never loads half of one.

An exported model is a plain Hugging Face folder (weights, tokenizer, ``raydistill.json``) that
``from_pretrained`` loads as it is. :func:`publish` replaces one in three steps:

1. the new model is uploaded whole to ``<folder>.next/``, its ``raydistill.json`` last, listing
   every other file with its size and SHA-256; a crash here leaves the old model as it was;
2. it takes the old model's place: locally by two renames (the old folder aside, the new one in);
   on S3, which has no rename, by server-side copies into ``<folder>/``, ``raydistill.json`` last,
   then the old model's files that the new one lacks are deleted;
3. ``<folder>.next/`` is deleted.

Readers (:func:`fetch`) check a downloaded model against the file list of its ``raydistill.json``.
A model caught in the middle of step 2 (a reader racing a publisher, or a publisher that crashed
there) does not check out; the reader then takes ``<folder>.next/``, which is whole until step 3,
or waits for the swap to end. A later :func:`publish` of the same folder, or the job run again,
finishes an interrupted swap. Folders exported before the file list existed load unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from pipeline import storage

META = "raydistill.json"
NEXT = ".next"


class ModelUnavailable(RuntimeError):
    """No whole model could be read from a model folder."""


def describe(folder: Path) -> dict[str, Any]:
    """``{"name": {"size", "sha256"}}`` for every file under a local model folder but its metadata."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != META:
            files[name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return files


def seal(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``raydistill.json`` into a local model folder: ``meta`` plus the list of its files."""
    (folder / META).write_text(json.dumps({**meta, "files": describe(folder)}, indent=2, ensure_ascii=False))


def publish(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    """Make the sealed model folder ``src`` the model at ``dst`` (see the module's docstring)."""
    finish_interrupted(dst_fs, dst)  # a model left half swapped is made whole before its staging is reused
    staged = dst + NEXT
    storage.delete_dir(dst_fs, staged)
    dst_fs.create_dir(staged, recursive=True)
    meta = storage.join(src, META)
    for path in storage.list_files(src_fs, src):
        if path != meta:
            _copy(src_fs, path, dst_fs, storage.join(staged, path[len(src):].lstrip("/")))
    _copy(src_fs, meta, dst_fs, storage.join(staged, META))
    _swap_in(dst_fs, dst)


def _swap_in(fs: Any, dst: str) -> None:
    """Put the whole model staged at ``dst.next`` in ``dst``'s place, then remove the staging folder."""
    staged = dst + NEXT
    if isinstance(fs, pafs.LocalFileSystem):
        aside = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        if os.path.exists(dst):
            os.rename(dst, aside)
        os.rename(staged, dst)
        shutil.rmtree(aside, ignore_errors=True)
        return
    new_files = {path[len(staged):].lstrip("/") for path in storage.list_files(fs, staged)}
    for name in sorted(new_files - {META}):
        _copy(fs, storage.join(staged, name), fs, storage.join(dst, name))
    _copy(fs, storage.join(staged, META), fs, storage.join(dst, META))
    for path in storage.list_files(fs, dst):
        if path[len(dst):].lstrip("/") not in new_files:
            storage.delete_file(fs, path)
    storage.delete_dir(fs, staged)


def finish_interrupted(fs: Any, dst: str) -> bool:
    """Complete a swap a crashed publisher left half done; whether there was one."""
    staged = dst + NEXT
    if not storage.exists(fs, storage.join(staged, META)):
        return False
    _swap_in(fs, dst)
    return True


def fetch(model_dir: str, storage_config: Any, into: str, attempts: int = 10, wait_s: float = 3.0) -> Path:
    """A local folder holding the whole model of ``model_dir`` (local or s3://), checked.

    A local model is used in place; one on S3 is downloaded into ``into``.
    """
    fs, path = storage.resolve(model_dir, storage_config)
    problems = []
    for attempt in range(attempts):
        if attempt:
            time.sleep(wait_s)  # a swap in progress: the model is whole again in a moment
        for candidate in (path, path + NEXT):
            local, problem = _whole(fs, candidate, into)
            if problem is None:
                return local
            problems.append(problem)
    raise ModelUnavailable(f"no whole model at {model_dir}: {problems[-2]}; {problems[-1]}")


def _whole(fs: Any, path: str, into: str) -> tuple[Path, str | None]:
    """``path`` as a local folder and None if it holds a whole model, else the reason it does not."""
    if not storage.exists(fs, storage.join(path, META)):
        return Path(), f"{path}: no {META}"
    if isinstance(fs, pafs.LocalFileSystem):
        local = Path(path)
        try:
            meta = json.loads((local / META).read_text())
        except (OSError, ValueError) as err:  # renamed away or half written meanwhile
            return Path(), f"{path}: {err}"
        missing = [name for name in meta.get("files", {}) if not (local / name).is_file()]
        return (Path(), f"{path}: missing {missing[:3]}") if missing else (local, None)
    local = Path(into) / uuid.uuid4().hex[:8]
    try:
        with fs.open_input_stream(storage.join(path, META)) as stream:
            meta_bytes = stream.read()
        meta = json.loads(meta_bytes)
        names = list(meta.get("files", {})) or [
            p[len(path):].lstrip("/") for p in storage.list_files(fs, path) if not p.endswith("/" + META)]
        for name in names:
            _copy(fs, storage.join(path, name), pafs.LocalFileSystem(), str(local / name))
    except (OSError, ValueError) as err:
        shutil.rmtree(local, ignore_errors=True)
        return Path(), f"{path}: {err}"
    (local / META).write_bytes(meta_bytes)
    for name, expected in meta.get("files", {}).items():
        if _sha256(local / name) != expected["sha256"]:
            shutil.rmtree(local, ignore_errors=True)
            return Path(), f"{path}: {name} does not match {META} (a model being replaced)"
    return local, None


def _copy(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    def copy() -> None:
        if src_fs is dst_fs and not isinstance(dst_fs, pafs.LocalFileSystem):
            dst_fs.copy_file(src, dst)  # server-side on S3
            return
        if isinstance(dst_fs, pafs.LocalFileSystem):
            dst_fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)

    storage.retried(dst_fs, copy, f"copying {src} to {dst}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
