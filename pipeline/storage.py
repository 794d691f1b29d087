"""Local paths and s3:// URIs behind one pyarrow filesystem interface.

Every path or URI comes from the config. Credentials are never read from the
config: pyarrow's S3 client takes them from the environment or the instance
role, as boto3 does.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import ConfigError, StorageConfig


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def resolve(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """The filesystem for ``uri`` and the path to use with it.

    The S3 endpoint is ``storage.endpoint_url``, else ``$AWS_ENDPOINT_URL``,
    else AWS.
    """
    if is_s3(uri):
        kwargs: dict[str, Any] = {}
        # AWS_ENDPOINT_URL is the AWS SDKs' own variable (boto3 reads it too).
        endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if storage.region:
            kwargs["region"] = storage.region
        return pafs.S3FileSystem(**kwargs), uri[len("s3://"):].rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(path: str, *parts: str) -> str:
    return "/".join([path.rstrip("/"), *parts])


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(fs: pafs.FileSystem, path: str, suffixes: Iterable[str] = ()) -> list[str]:
    """``path`` itself if it is a file, else the files below it, sorted.

    Names starting with ``_`` or ``.`` (markers, temporary files) are skipped.
    """
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.NotFound:
        return []
    suffixes = tuple(suffixes)
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = []
    for entry in found:
        relative = entry.path[len(path):].lstrip("/")
        if entry.type != pafs.FileType.File or any(p[:1] in "_." for p in relative.split("/")):
            continue
        if suffixes and not entry.path.endswith(suffixes):
            continue
        files.append(entry.path)
    return sorted(files)


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``path`` so that readers see either nothing or the whole file.

    Locally: a temporary file in the same folder, then a rename. On S3 an object
    only becomes visible once its upload completes, so a direct write is atomic.
    """
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = join(parent, f".tmp-{uuid.uuid4().hex}")
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as out:
        out.write(data)


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(fs, path, sink.getvalue())


def read_parquet(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    """All parquet files under ``path`` (a file or a folder) as one table."""
    files = list_files(fs, path, (".parquet",))
    tables = [pq.read_table(f, filesystem=fs, columns=columns) for f in files]
    if not tables:
        raise FileNotFoundError(f"no parquet files under {path}")
    return pa.concat_tables(tables, promote_options="default")


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8"))


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read().decode("utf-8"))


def delete_dir(fs: pafs.FileSystem, path: str) -> None:
    if exists(fs, path):
        fs.delete_dir(path)


def claim_output(
    fs: pafs.FileSystem, manifest_path: str, manifest: dict[str, Any], uri: str, key: str
) -> None:
    """Write a job's manifest, or check that an existing output was made by the same job.

    Resuming into an output made with other settings would mix incompatible
    rows or checkpoints, so it is refused, naming the first differing field.
    """
    if exists(fs, manifest_path):
        existing = read_json(fs, manifest_path)
        for field, value in manifest.items():
            if existing.get(field) != value:
                raise ConfigError(
                    f"{key}: {uri} was made with a different {field} ({existing.get(field)!r}, now {value!r}); "
                    "use a new output location or remove the old one"
                )
        return
    write_json(fs, manifest_path, manifest)
