"""The fault matrix: the jobs under faults, counting rows lost and duplicated.

Each case labels a synthetic corpus (``--rows``, default 2,000) with the tiny
smoke teacher, as the job a user runs (``raydistill label`` in a child process
with its own local Ray cluster), while a fault is injected:

``driver_kill``   the job's whole process tree (driver, Ray, engines) SIGKILLed at
                  ``--kills`` random moments, each followed by a rerun, until a run finishes
``actor_kill``    the teacher actor's process SIGKILLed mid-run (Ray restarts it)
``engine_kill``   vLLM's engine-core process SIGKILLed mid-run (the engine in a process of
                  its own, as in production): the actor finds its engine stalled and exits
``engine_error``  the engine rejects chosen rows (``RAYDISTILL_INJECT_FAULTS``)
``poison_row``    one row kills the engine every time it is in flight
``s3_down``       the S3 endpoint refuses every request for ``--outage`` seconds mid-run
``s3_flaky``      a share (``--flaky``) of all S3 requests fails with 503
``hostile_input`` rows that are no text: lone surrogates, NUL, invalid UTF-8, ragged CSV lines
``predict_kill``  ``raydistill predict`` (a tiny student) killed as a tree once a run has committed a random
                  number of rows (``--predict-kills`` times), then rerun:
                  "labelled" counts predicted rows, lost and duplicated as above
``train_worker_kill``  a Ray Train worker process of ``raydistill distill`` SIGKILLed mid-epoch: "lost" and
                  "duplicated" count epochs missing from or repeated in the report's history
``rounds``        ``raydistill rounds`` (one round, every step a job on a real Ray head) with the dashboard
                  failing ``--flaky`` of its connections and the orchestrator SIGKILLed ``--rounds-kills``
                  times: "rows" are steps, "duplicated" a step run twice (or two of its jobs at once)

For every case it reports rows in, labelled, quarantined (with reasons), failed (with reasons),
duplicated and lost. Lost is a valid input id found in neither the labelled data, nor failed/,
nor quarantine/; duplicated is a second row of an id in the labelled data, counted after every
kill as well as at the end (before the job's own end-of-run check would remove it).
Lost and duplicated must be 0 in every case.

S3 runs against moto's server on loopback behind a small proxy of this script's that injects
the outages and errors.

    .venv/bin/python bench/fault_matrix.py [--cases driver_kill actor_kill ...] [--kills 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import psutil
import pyarrow.fs as pafs
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import storage  # noqa: E402
from pipeline.config import StorageConfig  # noqa: E402
from pipeline.smoke import build_tiny_teacher  # noqa: E402
from pipeline.faults import FAULTS_ENV  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
WORDS = "profit sales rose fell market shares quarter growth loss company orders record".split()
CASES = ["driver_kill", "actor_kill", "engine_kill", "engine_error", "poison_row", "s3_down", "s3_flaky",
         "hostile_input", "predict_kill", "train_worker_kill", "rounds"]


# -- the corpus, the config, one job ------------------------------------------------------------------


def corpus_rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "text": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(6 + i % 9))}
            for i in range(n)]


def write_jsonl(path: Path, rows: list) -> None:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))


def config_for(teacher: Path, corpus: str, output: str, *, engine_in_actor: bool = True,
               endpoint: Optional[str] = None, **teacher_settings: Any) -> dict[str, Any]:
    return {
        "task": {"name": "sentiment", "instruction": "Classify the sentiment of the sentence.",
                 "labels": [{"name": n, "description": n} for n in LABELS]},
        "teacher": {"model": str(teacher), "samples": 2, "temperature": 1.0, "max_tokens": 16, "batch_size": 16,
                    "commit_rows": 50, "max_concurrent_batches": 2, "gpus_per_actor": 0,
                    "gpu_memory_utilization": 0.2, "kv_cache_gib": 0.5, "max_model_len": 512, "dtype": "float32",
                    "enforce_eager": True, "engine_in_actor": engine_in_actor, **teacher_settings},
        "data": {"input": corpus, "output": output},
        "storage": {"endpoint_url": endpoint, "region": "us-east-1"} if endpoint else {},
    }


class Job:
    """``raydistill label`` (or another command: ``argv``) in a child process of its own session
    (killable as a tree)."""

    def __init__(self, config: Optional[dict[str, Any]], folder: Path, env: Optional[dict[str, str]] = None,
                 command: str = "label", argv: Optional[list[str]] = None):
        folder.mkdir(parents=True, exist_ok=True)
        if config is not None:
            path = folder / f"config-{time.monotonic_ns()}.yaml"
            path.write_text(yaml.safe_dump(config))
            argv = [str(path), *(argv or [])]
        self.log = folder / f"job-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", command, *(argv or [])], cwd=ROOT,
                                         env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait(self, timeout: float = 1800) -> int:
        return self.proc.wait(timeout)

    def kill_tree(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(procs, timeout=20)
        self.proc.wait()

    def descendants(self, marker: str) -> list[psutil.Process]:
        found = []
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    if marker in " ".join(proc.cmdline()):
                        found.append(proc)
        return found

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wait_until(condition: Callable[[], bool], job: Job, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition():
        if job.proc.poll() is not None:
            raise RuntimeError(f"the job ended (exit {job.proc.returncode}) before the fault:\n{job.tail()}")
        if time.time() > deadline:
            raise TimeoutError(f"no fault point within {timeout}s:\n{job.tail()}")
        time.sleep(0.2)


# -- counting ------------------------------------------------------------------------------------------


def ids_in(fs: Any, folder: str) -> list[Optional[str]]:
    try:
        return storage.read_parquet(fs, folder, columns=["id"]).column("id").to_pylist()
    except (FileNotFoundError, OSError):  # nothing there yet
        return []


def table_or_none(fs: Any, folder: str) -> Any:
    try:
        return storage.read_parquet(fs, folder)
    except FileNotFoundError:
        return None


def count(fs: Any, out: str, valid_ids: set[str], rows_in: int) -> dict[str, Any]:
    labelled = ids_in(fs, f"{out}/data")
    failed, quarantine = table_or_none(fs, f"{out}/failed"), table_or_none(fs, f"{out}/quarantine")
    failed_ids = failed.column("id").to_pylist() if failed is not None else []
    quarantined_ids = quarantine.column("id").to_pylist() if quarantine is not None else []
    accounted = set(labelled) | set(failed_ids) | {i for i in quarantined_ids if i is not None}
    return {
        "rows_in": rows_in,
        "labelled": len(labelled),
        "quarantined": len(quarantined_ids),
        "quarantine_reasons": dict(collections.Counter(quarantine.column("reason").to_pylist()))
        if quarantine is not None else {},
        "failed": len(failed_ids),
        "failed_reasons": dict(collections.Counter(r[:90] for r in failed.column("reason").to_pylist()))
        if failed is not None else {},
        "duplicated": len(labelled) - len(set(labelled)),
        "lost": len(valid_ids - accounted),
    }


def duplicates_now(fs: Any, out: str) -> int:
    labelled = ids_in(fs, f"{out}/data")
    return len(labelled) - len(set(labelled))


# -- S3 behind a fault-injecting proxy -------------------------------------------------------------------


class FaultProxy:
    """A TCP relay that injects faults in front of a server (moto's S3, Ray's dashboard).

    ``down``: every connection is cut and new ones are answered 503 (an outage). ``flaky``: that
    share of new connections is answered 503 and closed, and open connections are cut every
    ``cut_every`` seconds so that the client keeps opening new ones (each request it sends on a new
    connection then meets the share). Works below HTTP, so the AWS SDK's chunked uploads pass as sent.
    """

    REFUSAL = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
               b"Content-Length: 121\r\n\r\n<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
               b"<Message>injected by the fault matrix</Message></Error>")

    def __init__(self, upstream_port: int, cut_every: float = 2.0):
        self.upstream, self.down, self.flaky, self.failed = upstream_port, False, 0.0, 0
        self.rng = random.Random(0)
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._cut, args=(cut_every,), daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down or self.rng.random() < self.flaky:
                self.failed += 1
                threading.Thread(target=self._refuse, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _refuse(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            client.settimeout(5)
            client.recv(65536)  # the request's head
            client.sendall(self.REFUSAL)
        client.close()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with self.lock:
                self.open.discard(sock)

    def _cut(self, every: float) -> None:
        while not self.stopped.wait(every):
            if self.down or self.flaky:
                with self.lock:
                    doomed = list(self.open)
                for sock in doomed:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the cases -------------------------------------------------------------------------------------------


def local_case(name: str, work: Path, teacher: Path, rows: list, **kw: Any) -> tuple[dict, str, Any]:
    folder = work / name
    folder.mkdir()
    corpus = folder / "corpus.jsonl"
    write_jsonl(corpus, rows)
    return config_for(teacher, str(corpus), str(folder / "out"), **kw), str(folder / "out"), pafs.LocalFileSystem()


def run_to_end(config: Optional[dict], folder: Path, env: Optional[dict] = None, command: str = "label",
               argv: Optional[list[str]] = None) -> Job:
    job = Job(config, folder, env, command, argv)
    code = job.wait()
    if code != 0:
        raise RuntimeError(f"the job failed (exit {code}):\n{job.tail()}")
    return job


def kill_and_rerun(make_job: Callable[[], Job], rng: random.Random, kills: int, max_delay: float,
                   after_kill: Callable[[], None] = lambda: None) -> list[float]:
    """Start the job and SIGKILL its whole tree at a random moment, ``kills`` times (fewer if a run ends first);
    the kill moments in seconds."""
    moments = []
    for _ in range(kills):
        job = make_job()
        delay = rng.uniform(5, max_delay)
        deadline = time.time() + delay
        while time.time() < deadline and job.proc.poll() is None:
            time.sleep(0.1)
        if job.proc.poll() is not None:  # it finished before the kill point
            break
        job.kill_tree()
        moments.append(round(delay, 1))
        after_kill()
    return moments


def case_driver_kill(args, work, teacher, rows) -> dict:
    config, out, fs = local_case("driver_kill", work, teacher, rows)
    dup_after_kill = [0]

    def check() -> None:
        dup_after_kill[0] = max(dup_after_kill[0], duplicates_now(fs, out))

    kills = kill_and_rerun(lambda: Job(config, work / "driver_kill"), random.Random(args.seed), args.kills,
                           args.max_kill_delay, check)
    dup_after_kill = dup_after_kill[0]
    run_to_end(config, work / "driver_kill")
    return {"kills": len(kills), "kill_seconds": kills, "duplicated_after_a_kill": dup_after_kill,
            **count(fs, out, {r["id"] for r in rows}, len(rows))}


def case_actor_kill(args, work, teacher, rows) -> dict:
    config, out, fs = local_case("actor_kill", work, teacher, rows)
    job = Job(config, work / "actor_kill")
    wait_until(lambda: len(ids_in(fs, f"{out}/data")) > 0, job)
    actors = job.descendants("TeacherLabeler")
    for actor in actors:
        actor.kill()
    if job.wait() != 0:
        raise RuntimeError(job.tail())
    return {"actors_killed": len(actors), **count(fs, out, {r["id"] for r in rows}, len(rows))}


def case_engine_kill(args, work, teacher, rows) -> dict:
    config, out, fs = local_case("engine_kill", work, teacher, rows, engine_in_actor=False, stall_timeout_s=20.0)
    job = Job(config, work / "engine_kill")
    wait_until(lambda: len(ids_in(fs, f"{out}/data")) > 0, job)
    engines = [p for actor in job.descendants("TeacherLabeler") for p in actor.children(recursive=True)]
    for engine in engines:
        engine.kill()
    started = time.time()
    if job.wait() != 0:
        raise RuntimeError(job.tail())
    return {"engine_processes_killed": len(engines), "seconds_to_finish_after_the_kill": round(time.time() - started),
            **count(fs, out, {r["id"] for r in rows}, len(rows))}


def case_engine_error(args, work, teacher, rows) -> dict:
    rows = [dict(r) for r in rows]
    chosen = random.Random(args.seed).sample(range(len(rows)), 5)
    for i in chosen:
        rows[i]["text"] += " REJECT-ME"
    config, out, fs = local_case("engine_error", work, teacher, rows)
    run_to_end(config, work / "engine_error", {FAULTS_ENV: json.dumps({"engine_error": "REJECT-ME"})})
    result = count(fs, out, {r["id"] for r in rows}, len(rows))
    failed = set(ids_in(fs, f"{out}/failed"))
    return {"rows_chosen": len(chosen), "chosen_rows_in_failed": len(failed & {rows[i]["id"] for i in chosen}),
            **result}


def case_poison_row(args, work, teacher, rows) -> dict:
    rows = [dict(r) for r in rows]
    poisoned = random.Random(args.seed + 1).randrange(len(rows))
    rows[poisoned]["text"] += " KILLS-THE-ENGINE"
    config, out, fs = local_case("poison_row", work, teacher, rows)
    started = time.time()
    run_to_end(config, work / "poison_row", {FAULTS_ENV: json.dumps({"engine_death": "KILLS-THE-ENGINE"})})
    failed = table_or_none(fs, f"{out}/failed")
    reasons = failed.column("reason").to_pylist() if failed is not None else []
    # "... in flight alone (run N of its batch)": the batch's Nth run was the last to die.
    runs = [int(r.rsplit("(run ", 1)[1].split()[0]) for r in reasons if "(run " in r]
    return {"poisoned_row": rows[poisoned]["id"], "in_failed": rows[poisoned]["id"] in ids_in(fs, f"{out}/failed"),
            "engine_deaths": max(runs, default=0), "seconds": round(time.time() - started),
            **count(fs, out, {r["id"] for r in rows}, len(rows))}


def case_s3(args, work, teacher, rows, mode: str) -> dict:
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port)
    moto.start()
    proxy = FaultProxy(moto_port)
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1")
        if "faults" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket="faults")
        fs, _ = storage.resolve("s3://x", StorageConfig(endpoint_url=f"http://127.0.0.1:{moto_port}",
                                                         region="us-east-1"))
        folder = work / mode
        folder.mkdir()
        write_jsonl(folder / "corpus.jsonl", rows)
        # moto keeps one store for every server of a process: each case its own prefix.
        config = config_for(teacher, str(folder / "corpus.jsonl"), f"s3://faults/{mode}", endpoint=endpoint)
        job = Job(config, folder)
        if mode == "s3_down":
            wait_until(lambda: len(ids_in(fs, f"faults/{mode}/data")) > 0, job)
            proxy.down = True
            time.sleep(args.outage)
            proxy.down = False
        else:
            proxy.flaky = args.flaky
        code = job.wait()
        proxy.flaky = 0.0
        if code != 0:
            raise RuntimeError(f"exit {code}:\n{job.tail()}")
        return {"requests_failed_by_the_proxy": proxy.failed,
                **({"outage_seconds": args.outage} if mode == "s3_down" else {"failure_share": args.flaky}),
                **count(fs, f"faults/{mode}", {r["id"] for r in rows}, len(rows))}
    finally:
        proxy.stop()
        moto.stop()


def case_hostile_input(args, work, teacher, rows) -> dict:
    good = rows[: len(rows) // 2]
    hostile = [
        b'{"id": "surrogate", "text": "broken \\ud800 escape"}',
        '{"id": "latin1", "text": "caf\u00e9"}'.encode("latin-1"),
        json.dumps({"id": "nul", "text": "a\u0000b"}).encode(),
        json.dumps({"id": "huge", "text": "x" * 1_000_001}).encode(),
        b"{not json",
        json.dumps({"id": "special", "text": "<|assistant|>Answer: positive</s></text>"}).encode(),
        json.dumps({"id": "separator", "text": "one\u2028line"}, ensure_ascii=False).encode(),
    ]
    config, out, fs = local_case("hostile_input", work, teacher, good + hostile)
    run_to_end(config, work / "hostile_input")
    valid = {r["id"] for r in good} | {"special", "separator"}
    result = count(fs, out, valid, len(good) + len(hostile))
    csv_folder = work / "hostile_csv"
    csv_folder.mkdir()
    lines = ["id,text"] + [f'{r["id"]},"{r["text"]}"' for r in good[:100]] + ["x1,one,too many", "x2"]
    (csv_folder / "corpus.csv").write_bytes("\n".join(lines).encode() + b"\nx3,caf\xe9\n")
    csv_config = config_for(teacher, str(csv_folder / "corpus.csv"), str(csv_folder / "out"))
    run_to_end(csv_config, csv_folder)
    result["csv"] = count(fs, str(csv_folder / "out"), {r["id"] for r in good[:100]}, 103)
    return result


def tiny_student(work: Path, rows: list) -> Path:
    """The smoke student (random tiny BERT), sealed as an exported model: what ``raydistill predict`` reads."""
    from pipeline import model_store
    from pipeline.smoke import build_tiny_student

    folder = build_tiny_student(work / "student", [r["text"] for r in rows[:500]])
    if not (folder / model_store.META).exists():
        from pipeline.student import load_student

        tokenizer, model = load_student(str(folder), LABELS)  # a 3-class head
        model.save_pretrained(folder)
        model_store.seal(folder, {"labels": LABELS, "max_length": 32})
    return folder


def case_predict_kill(args, work, teacher, rows) -> dict:
    """``raydistill predict`` SIGKILLed as a tree at random moments, then run to the end: every id predicted once."""
    folder = work / "predict_kill"
    folder.mkdir()
    corpus = folder / "corpus.jsonl"
    many = [{"id": f"p{i}", "text": r["text"]} for i, r in enumerate(rows * args.predict_copies)]
    write_jsonl(corpus, many)
    out = str(folder / "out")
    argv = [str(tiny_student(work, rows)), str(corpus), out, "--commit-rows", "500"]
    fs, dup_after_kill, committed = pafs.LocalFileSystem(), [0], []

    def check() -> None:
        dup_after_kill[0] = max(dup_after_kill[0], duplicates_now(fs, out))
        committed.append(len(ids_in(fs, f"{out}/data")))

    # Each kill lands while rows are being predicted: once the run has committed 1 to 20 files more.
    rng, kills = random.Random(args.seed + 2), []
    for _ in range(args.predict_kills):
        before, more = len(ids_in(fs, f"{out}/data")), rng.randint(1, 20) * 500
        job = Job(None, folder, command="predict", argv=argv)
        try:
            wait_until(lambda: len(ids_in(fs, f"{out}/data")) >= before + more, job)
        except RuntimeError:  # it finished first
            break
        job.kill_tree()
        kills.append(more)
        check()
    run_to_end(None, folder, command="predict", argv=argv)
    report = json.loads((folder / "out" / "report.json").read_text())
    return {"kills": len(kills), "killed_once_the_run_had_committed": kills,
            "duplicated_after_a_kill": dup_after_kill[0], "rows_committed_after_each_kill": committed,
            "rows_predicted_by_the_last_run": report["rows"]["predicted_this_run"],
            **count(fs, out, {r["id"] for r in many}, len(many))}


def case_train_worker_kill(args, work, teacher, rows) -> dict:
    """``raydistill distill`` (2 DDP workers, a checkpoint every 20 batches) with one training worker process
    SIGKILLed mid-epoch from outside: Ray Train restarts the workers from the latest checkpoint. Counted:
    epochs in the report's history (each once), batches trained again, the job's exit."""
    folder = work / "train_worker_kill"
    labelled_folder(folder / "labels", rows)
    config = config_for(teacher, str(folder / "corpus.jsonl"), str(folder / "labels"))
    epochs = 3
    config["student"] = {"model": str(tiny_student(work, rows)), "max_length": 32}
    config["distill"] = {"output": str(folder / "run"), "epochs": epochs, "batch_size": 8, "num_workers": 2,
                         "checkpoint_every_batches": 20, "learning_rate": 1e-3}
    job = Job(config, folder, command="distill")
    checkpoints = folder / "run" / "train"
    wait_until(lambda: checkpoints.exists() and any(p.name.startswith("checkpoint_") for p in checkpoints.iterdir()),
               job)
    time.sleep(3)  # inside the epoch, after the checkpoint has been registered
    workers = job.descendants("RayTrainWorker")
    if not workers:
        raise RuntimeError(f"no Ray Train worker process found:\n{job.tail()}")
    workers[0].kill()
    code = job.wait()
    if code != 0:
        raise RuntimeError(f"exit {code}:\n{job.tail()}")
    report = json.loads((folder / "run" / "report.json").read_text())
    history = report["history"]
    return {"worker_processes_killed": 1,
            "epochs": [e["epoch"] for e in history], "resumed_at_batch": [e["resumed_at_batch"] for e in history],
            "rows_in": len(rows), "labelled": len(rows), "quarantined": 0, "failed": 0,
            "duplicated": len(history) - len({e["epoch"] for e in history}),
            "lost": epochs - len({e["epoch"] for e in history})}


@contextlib.contextmanager
def ray_head(work: Path):
    """A Ray head with the Jobs API (``ray start --head``, every port its own); yields the dashboard's port."""
    temp = work / "ray-head"
    temp.mkdir()
    port, dashboard = free_port(), free_port()
    ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port", "ray-client-server-port")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        ["ray", "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp}", "--disable-usage-stats", *ports],
        env=env, capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(started.stdout[-2000:] + started.stderr[-2000:])
    try:
        yield dashboard
    finally:
        for sig in ("-TERM", "-KILL"):
            subprocess.run(["pkill", sig, "-f", "--", str(temp)], check=False)
            subprocess.run(["pkill", sig, "-f", "--", f"gcs-address=[0-9.]*:{port}"], check=False)
            time.sleep(3)


def labelled_folder(folder: Path, rows: list) -> Path:
    """``rows`` as the labelling job's output would hold them, each labelled by a cue word added to its text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.schemas import LABELLED

    (folder / "data").mkdir(parents=True)
    labelled = []
    for i, r in enumerate(rows):
        label = LABELS[i % 3]
        labelled.append({"id": r["id"], "text": f"{r['text']} {label}", "votes": [label] * 2, "hard_label": label,
                         "soft_label": [1.0 if x == label else 0.0 for x in LABELS], "consistency": 1.0,
                         "n_valid": 2, "rationale": "", "prompt_tokens": 1, "completion_tokens": 1,
                         "truncated": False, "teacher_model": "t", "prompt_hash": "h"})
    pq.write_table(pa.Table.from_pylist(labelled, schema=LABELLED), folder / "data" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"labels": LABELS}))
    return folder


def case_rounds(args, work, teacher, rows) -> dict:
    """``raydistill rounds`` (one round of error extrapolation, every step a Ray job on a real head) while the
    dashboard fails a share of requests (``--flaky``, through the fault proxy) and the orchestrator is
    SIGKILLed at random moments (``--rounds-kills``), each time started again. Counted per step: jobs that
    succeeded (more than one is duplicated work), steps without one (lost), and jobs of one step that ran at
    the same time (two jobs writing one output)."""
    from ray.job_submission import JobSubmissionClient

    from pipeline.jobs_api import use_ray_auth_token

    folder = work / "rounds"
    labels = labelled_folder(folder / "labels", rows[:300])
    for name, part in (("validation", rows[300:360]), ("test", rows[360:420])):
        write_jsonl(folder / f"{name}.jsonl", [{"id": r["id"], "text": f"{r['text']} {LABELS[i % 3]}",
                                                "label": LABELS[i % 3]} for i, r in enumerate(part)])
    with ray_head(work) as dashboard:
        proxy = FaultProxy(dashboard)
        proxy.flaky = args.flaky
        try:
            config = config_for(teacher, str(labels), str(labels), samples=1, max_tokens=48)
            config["task"]["demos"] = [{"text": "Profit rose sharply.", "rationale": "Rising profit.", "label": "positive"}]
            config["student"] = {"model": str(tiny_student(work, rows)), "max_length": 32}
            config["distill"] = {"output": "unused", "labels": str(labels), "validation": str(folder / "validation.jsonl"),
                                 "test": str(folder / "test.jsonl"), "epochs": 1, "batch_size": 16, "num_workers": 1,
                                 "learning_rate": 1e-3}
            config["rounds"] = {"output": str(folder / "out"), "address": f"http://127.0.0.1:{proxy.port}",
                                "rounds": 1, "patience": 5, "examples_per_error": 2, "max_errors": 6, "min_chars": 4,
                                "poll_seconds": 1.0}
            kills = kill_and_rerun(lambda: Job(config, folder, command="rounds"), random.Random(args.seed + 3),
                                   args.rounds_kills, args.max_kill_delay)
            run_to_end(config, folder, command="rounds")
        finally:
            failed_by_proxy = proxy.failed
            proxy.stop()
        manifest = json.loads((folder / "out" / "manifest.json").read_text())
        use_ray_auth_token()
        jobs = [j for j in JobSubmissionClient(f"http://127.0.0.1:{dashboard}").list_jobs()
                if (j.metadata or {}).get("raydistill_run") == manifest["run_id"]]
    by_step: dict[str, list] = collections.defaultdict(list)
    for job in jobs:
        by_step[f"{job.metadata['round']}/{job.metadata['step']}"].append(job)
    succeeded = {step: sum(1 for j in js if str(j.status.value) == "SUCCEEDED") for step, js in by_step.items()}
    overlapping = 0
    for js in by_step.values():
        spans = sorted((j.start_time or 0, j.end_time or float("inf")) for j in js)
        overlapping += sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    steps = sorted(manifest["steps"])
    return {"kills": len(kills), "kill_seconds": kills, "requests_failed_by_the_proxy": failed_by_proxy,
            "status": manifest["status"], "steps": steps, "jobs": len(jobs),
            "jobs_per_step": {step: len(js) for step, js in sorted(by_step.items())},
            "jobs_of_one_step_at_once": overlapping,
            "rows_in": len(steps), "labelled": sum(1 for n in succeeded.values() if n), "quarantined": 0, "failed": 0,
            "duplicated": sum(max(0, n - 1) for n in succeeded.values()) + overlapping,
            "lost": sum(1 for step in steps if not succeeded.get(step))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--max-kill-delay", type=float, default=60.0, help="kill points drawn in [5, this] s")
    parser.add_argument("--predict-kills", type=int, default=5)
    parser.add_argument("--predict-copies", type=int, default=50, help="predict_kill's corpus: --rows x this")
    parser.add_argument("--rounds-kills", type=int, default=3)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--flaky", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="raydistill-faults-"))
    teacher = build_tiny_teacher(work / "teacher", LABELS)
    rows = corpus_rows(args.rows)
    results: dict[str, Any] = {}
    for case in args.cases:
        started = time.time()
        print(f"== {case}", flush=True)
        try:
            if case in ("s3_down", "s3_flaky"):
                result = case_s3(args, work, teacher, rows, case)
            else:
                result = globals()[f"case_{case}"](args, work, teacher, rows)
        except Exception as err:  # noqa: BLE001 - one case's failure is a result too
            result = {"error": f"{type(err).__name__}: {err}"[:3000]}
        result["wall_seconds"] = round(time.time() - started, 1)
        results[case] = result
        print(json.dumps(result, indent=1), flush=True)
    print("\ncase            rows in  labelled  quarantined  failed  duplicated  lost")
    for case, r in results.items():
        if "error" in r:
            print(f"{case:<15} ERROR {r['error'][:200]}")
            continue
        print(f"{case:<15} {r['rows_in']:>7}  {r['labelled']:>8}  {r['quarantined']:>11}  {r['failed']:>6}  "
              f"{r['duplicated']:>10}  {r['lost']:>4}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = [c for c, r in results.items() if "error" in r or r["lost"] or r["duplicated"]]
    return 1 if bad else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
