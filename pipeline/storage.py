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
from typing import TYPE_CHECKING, Any, Iterable, Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import ConfigError

if TYPE_CHECKING:  # only for annotations: the config module reads S3 configs through this one
    from pipeline.config import StorageConfig


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
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=storage.max_attempts)
        return pafs.S3FileSystem(**kwargs), uri[len("s3://"):].rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(path: str, *parts: str) -> str:
    return "/".join([path.rstrip("/"), *parts])


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return retried(fs, lambda: fs.get_file_info(path).type != pafs.FileType.NotFound, f"looking for {path}")


def list_files(fs: pafs.FileSystem, path: str, suffixes: Iterable[str] = ()) -> list[str]:
    """``path`` itself if it is a file, else the files below it, sorted.

    Names starting with ``_`` or ``.`` (markers, temporary files) are skipped.
    """
    info = retried(fs, lambda: fs.get_file_info(path), f"looking for {path}")
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.NotFound:
        return []
    suffixes = tuple(suffixes)
    found = retried(fs, lambda: fs.get_file_info(pafs.FileSelector(path, recursive=True)), f"listing {path}")
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
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        tmp = join(parent, f".tmp-{uuid.uuid4().hex}")
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        os.replace(tmp, path)
        return

    def upload() -> None:
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)

    retrying(upload, f"writing {path}")


# Whole-operation attempts on top of the S3 client's own (storage.max_attempts per request): a commit
# that still fails is tried again after 1, 2, 4, ... seconds, so that an S3 outage of a few minutes
# does not throw away the GPU work of the batch being committed.
WRITE_ATTEMPTS = 8


def retrying(operation: Any, what: str, attempts: int = WRITE_ATTEMPTS, first_wait: float = 1.0) -> Any:
    """``operation()``, tried up to ``attempts`` times on ``OSError`` (pyarrow's S3 errors) with backoff."""
    import sys
    import time

    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            raise  # an answer, not a failure
        except OSError as err:
            if attempt == attempts:
                raise OSError(f"{what}: failed {attempts} times, the last with: {err}") from err
            wait = min(first_wait * 2 ** (attempt - 1), 60.0)
            print(f"[storage] {what}: {err}; trying again in {wait:.0f}s ({attempt}/{attempts})", file=sys.stderr,
                  flush=True)
            time.sleep(wait)


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(fs, path, sink.getvalue())


def read_parquet(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    """All parquet files under ``path`` (a file or a folder) as one table."""
    files = list_files(fs, path, (".parquet",))
    tables = [retried(fs, lambda f=f: pq.read_table(f, filesystem=fs, columns=columns), f"reading {f}") for f in files]
    if not tables:
        raise FileNotFoundError(f"no parquet files under {path}")
    return pa.concat_tables(tables, promote_options="default")


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8"))


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    def read() -> Any:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode("utf-8"))

    return retried(fs, read, f"reading {path}")


def retried(fs: pafs.FileSystem, operation: Any, what: str) -> Any:
    """``operation()`` on ``fs``, tried again as a whole on S3 (:func:`retrying`): after a connection cut
    while a body streams in (which the S3 client does not retry), or once the client's retry quota is
    spent (AWS's standard strategy stops retrying after a burst of errors). Reads, lookups, deletes and
    copies; local calls run once."""
    if isinstance(fs, pafs.LocalFileSystem):
        return operation()
    return retrying(operation, what)


def delete_file(fs: pafs.FileSystem, path: str) -> None:
    """Delete ``path``; a file that is not there is no error."""
    try:
        retried(fs, lambda: fs.delete_file(path), f"deleting {path}")
    except FileNotFoundError:
        pass


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


class LeaseHeld(RuntimeError):
    """Another live job holds the output."""


class OutputLease:
    """One live job per output folder: ``lease.json`` names the holder and is renewed every
    ``renew_s`` seconds from a thread of the holding process.

    A second job pointed at the folder while the lease is fresh is refused with an error naming
    the holder. A lease not renewed for ``ttl_s`` seconds, or held by a process of this machine
    that is gone (a killed driver, started again at once), is stale and taken over. Object stores
    have no compare-and-swap here, so the lease is written, then read back after ``settle_s``: of
    two jobs starting together, the one that reads another holder backs off. It keeps the
    mistakes people make (a second job on a running output) from mixing two runs' files; it is
    not a lock against adversaries.
    """

    def __init__(self, fs: pafs.FileSystem, root: str, uri: str, key: str, what: str, ttl_s: float = 180.0,
                 renew_s: float = 20.0, settle_s: float = 1.0):
        import socket
        import threading

        self.fs, self.path, self.uri, self.key = fs, join(root, "lease.json"), uri, key
        self.ttl_s, self.renew_s, self.settle_s = ttl_s, renew_s, settle_s
        self.me = {"holder": uuid.uuid4().hex, "what": what, "host": socket.gethostname(), "pid": os.getpid(),
                   "pid_started": _process_started(os.getpid())}
        self._stop = threading.Event()
        self._thread: Any = None

    def __enter__(self) -> "OutputLease":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        import threading
        import time

        current = self._read()
        if current is not None and not self._stale(current):
            raise LeaseHeld(self._held_message(current))
        self._write()
        time.sleep(self.settle_s)
        current = self._read()
        if current is None or current["holder"] != self.me["holder"]:
            raise LeaseHeld(self._held_message(current or {}))
        self._thread = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self._read()
        if current is not None and current["holder"] == self.me["holder"]:
            delete_file(self.fs, self.path)

    def _renew(self) -> None:
        import sys

        while not self._stop.wait(self.renew_s):
            try:
                self._write()
            except OSError as err:  # a missed renewal is no reason to stop the job
                print(f"[lease] could not renew {self.path}: {err}", file=sys.stderr, flush=True)

    def _write(self) -> None:
        import time

        write_json(self.fs, self.path, {**self.me, "renewed": time.time()})

    def _read(self) -> Any:
        try:
            return read_json(self.fs, self.path)
        except FileNotFoundError:
            return None

    def _stale(self, lease: dict[str, Any]) -> bool:
        import socket
        import time

        if time.time() - lease.get("renewed", 0) > self.ttl_s:
            return True
        # Held by a process of this machine that is gone (or a new process with its pid).
        return lease.get("host") == socket.gethostname() and _process_started(lease.get("pid")) != lease.get(
            "pid_started")

    def _held_message(self, lease: dict[str, Any]) -> str:
        import time

        age = time.time() - lease.get("renewed", time.time())
        return (f"{self.key}: {self.uri} is in use by a running {lease.get('what', 'job')} (host "
                f"{lease.get('host', '?')}, pid {lease.get('pid', '?')}, renewed {age:.0f}s ago); wait for it "
                f"to end or use another output. A lease not renewed for {self.ttl_s:.0f}s is taken over.")


def _process_started(pid: Any) -> Optional[float]:
    """When process ``pid`` of this machine started (None: no such process)."""
    try:
        import psutil

        return psutil.Process(int(pid)).create_time()
    except Exception:  # noqa: BLE001 - gone, not ours, or no pid
        return None
