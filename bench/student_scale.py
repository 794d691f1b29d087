"""Distil and predict at scale: wall time, rows/s and the driver's peak memory at 100k and 1M rows.

For each size N (default 100k and 1M), in one process, one job after the other:

1. N synthetic teacher-labelled rows are written in the labelling job's layout
   (``<labels>/data/part-*.parquet`` in the classification type's labelled schema,
   ``--rows-per-file`` rows a file, ``manifest.json`` with the labels), by Ray tasks: the
   bench's own process never holds them.
2. ``distill``: ``pipeline.distill.run_distill`` (mode cls, 1 epoch, one worker) with a
   tiny random student (``pipeline.smoke.build_tiny_student``, as the smoke mode) and no
   gold set, so the teacher hold-out is evaluated (1 row in 20 held out; at most
   ``HOLDOUT_EVAL_MAX`` of them predicted by student replicas). Training is capped by
   the data, not by a flag of the job: only about ``--train-rows`` rows (spread evenly
   through the files) have unanimous votes, so the job's consistency filter (cls, 1.0)
   trains on those; the scan, the Ray Data read and filter and the hold-out's selection
   still go over all N rows.
3. ``predict``: ``pipeline.predict.run_predict`` with the exported student over the same
   N rows (the labelled files as the corpus: id and text), ``--actors`` replicas.

Each job runs in a child process of its own, the Ray driver, joined to the bench's local Ray
cluster (so one job's freed memory cannot hide the next one's). Its figures: wall seconds,
rows/s (N over the wall time) and the driver's peak resident memory above what it held just
before the job (the libraries imported), sampled from ``/proc/self/status`` every 20 ms by a
thread; also its absolute peak (``ru_maxrss``). The table ends with the ratio of the largest
size's peak to the smallest's: flat (about 1x) when the driver holds counts and samples, not rows.

    .venv/bin/python bench/student_scale.py [--rows 100000 1000000] [--train-rows 20000] [--distill-only] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common import init_quiet_ray, write_figures

LABELS = ["negative", "neutral", "positive"]
WORDS = ("the company said on monday that its results for the quarter were as reported by analysts who "
         "expected revenue growth margins costs guidance shares dividend loss gain record lawsuit meeting "
         "scheduled located excellent terrible strong weak outlook demand supply market").split()


class PeakRss:
    """The peak of this process's resident memory above its level when started, sampled in a thread."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.baseline, self.peak = every_s, rss_bytes(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            if self._stop.wait(self.every_s):
                self.peak = max(self.peak, rss_bytes())
                return

    @property
    def above_baseline_mb(self) -> float:
        return round(max(0, self.peak - self.baseline) / 2**20, 1)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def write_part(path: str, first: int, rows: int, unanimous_every: int, schema: Any) -> int:
    """Ray task: ``rows`` synthetic labelled rows, ids ``first..``, one parquet file at ``path``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(first)
    index = np.arange(first, first + rows)
    label = index % len(LABELS)
    unanimous = index % unanimous_every == 0
    words = np.array(WORDS, dtype=object)
    texts = [" ".join(words[rng.integers(0, len(WORDS), size=int(n))]) + f" {LABELS[l]}"
             for n, l in zip(rng.integers(6, 20, size=rows), label)]
    soft = np.where(np.arange(len(LABELS))[None, :] == label[:, None], np.where(unanimous, 1.0, 0.75)[:, None],
                    np.where(unanimous, 0.0, 0.125)[:, None])
    columns = {
        "id": pa.array([f"row-{i:09d}" for i in index]),
        "text": pa.array(texts),
        "votes": pa.array([[LABELS[l]] * 8 for l in label], pa.list_(pa.string())),
        "hard_label": pa.array([LABELS[l] for l in label]),
        "soft_label": pa.array(list(soft), pa.list_(pa.float64())),
        "consistency": pa.array(np.where(unanimous, 1.0, 0.75)),
        "n_valid": pa.array(np.full(rows, 8, dtype=np.int32)),
        "rationale": pa.array(["r"] * rows),
        "prompt_tokens": pa.array(np.full(rows, 100, dtype=np.int64)),
        "completion_tokens": pa.array(np.full(rows, 40, dtype=np.int64)),
        "truncated": pa.array(np.zeros(rows, dtype=bool)),
        "teacher_model": pa.array(["synthetic"] * rows),
        "prompt_hash": pa.array(["h"] * rows),
    }
    pq.write_table(pa.table([columns[field.name] for field in schema], schema=schema), path)
    return rows


def write_labelled(folder: Path, rows: int, rows_per_file: int, train_rows: int, schema: Any) -> None:
    import ray

    (folder / "data").mkdir(parents=True)
    task = ray.remote(num_cpus=1)(write_part)
    unanimous_every = max(1, rows // max(1, train_rows))
    refs = [task.remote(str(folder / "data" / f"part-{first // rows_per_file:05d}.parquet"), first,
                        min(rows_per_file, rows - first), unanimous_every, schema)
            for first in range(0, rows, rows_per_file)]
    assert sum(ray.get(refs)) == rows
    (folder / "manifest.json").write_text(json.dumps({"labels": LABELS}))


def config_for(workdir: Path, labels: Path, student: Path, args: argparse.Namespace) -> Any:
    from pipeline.config import config_from_dict

    return config_from_dict({
        "task": {"name": "synthetic", "instruction": "Classify the sentiment.",
                 "labels": [{"name": name, "description": name} for name in LABELS]},
        "teacher": {"model": "synthetic", "samples": 8},
        "data": {"input": str(labels), "output": str(labels)},
        "student": {"model": str(student), "max_length": args.max_length},
        "distill": {"output": str(workdir / "run"), "labels": str(labels), "mode": "cls", "epochs": 1,
                    "batch_size": args.batch_size, "learning_rate": 1e-3, "num_workers": 1, "seed": 0},
    })


def measured(job: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float, float]:
    """The job's report, its wall seconds and the driver's peak RSS above its level before it (MB)."""
    with PeakRss() as rss:
        started = time.perf_counter()
        report = job()
        seconds = time.perf_counter() - started
    return report, seconds, rss.above_baseline_mb


def child(args: argparse.Namespace) -> None:
    """One job in this process (the driver), joined to the bench's cluster; prints its figures as JSON."""
    import ray.data  # noqa: F401  (the libraries the jobs use, imported before the baseline)
    import ray.train.torch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from pipeline import distill as _distill, predict as _predict, student as _student  # noqa: F401
    from pipeline.cluster import init_ray

    init_ray()  # RAY_ADDRESS: the bench's cluster
    workdir, rows = Path(args.workdir), args.rows[0]
    labels = workdir / "labels"
    if args.job == "distill":
        from pipeline.distill import HOLDOUT_EVAL_MAX, run_distill

        config = config_for(workdir, labels, Path(args.student), args)
        report, seconds, peak = measured(lambda: run_distill(config, log=lambda line: None))
        figures = {"train_rows": report["rows"]["train"], "train_seconds": report["time"]["train_seconds"],
                   "holdout_rows": report["rows"]["teacher_holdout"],
                   "holdout_evaluated": report["rows"]["teacher_holdout_evaluated"],
                   "holdout_accuracy": report["evaluation"]["teacher_holdout"]["accuracy"],
                   "holdout_eval_max": HOLDOUT_EVAL_MAX}
    else:
        from pipeline.predict import run_predict

        report, seconds, peak = measured(lambda: run_predict(
            str(workdir / "run" / "model"), str(labels / "data"), str(workdir / "predictions"),
            batch_size=args.batch_size, commit_rows=args.commit_rows, concurrency=args.actors, log=lambda line: None))
        figures = {"predicted": report["rows"]["predicted"], "job_rows_per_second": report["rows_per_second"]}
    figures = {"wall_seconds": round(seconds, 1), "rows_per_second": round(rows / seconds, 1),
               "driver_peak_mb": peak,
               "driver_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **figures}
    print("FIGURES " + json.dumps(figures), flush=True)


def run_job(job: str, rows: int, workdir: Path, student: Path, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    command = [sys.executable, __file__, "--job", job, "--workdir", str(workdir), "--student", str(student),
               "--rows", str(rows), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--actors", str(args.actors), "--commit-rows", str(args.commit_rows)]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{job} at {rows} rows failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    figures = json.loads(lines[-1][len("FIGURES "):])
    print(f"[bench] {rows} rows: {job} {figures}", flush=True)
    return figures


def run_size(rows: int, student: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import tasks

    with tempfile.TemporaryDirectory(prefix="student_scale_") as tmp:
        workdir = Path(tmp)
        labels = workdir / "labels"
        started = time.perf_counter()
        schema = tasks.for_config(config_for(workdir, labels, student, args)).labelled_schema()
        write_labelled(labels, rows, args.rows_per_file, args.train_rows, schema)
        print(f"[bench] {rows} rows written in {time.perf_counter() - started:.0f}s", flush=True)
        distill = run_job("distill", rows, workdir, student, args)
        predict = None if args.distill_only else run_job("predict", rows, workdir, student, args)
        assert predict is None or predict["predicted"] == rows
    return {"rows": rows, "files": -(-rows // args.rows_per_file), "distill": distill, "predict": predict}


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'rows':>9} {'job':<8}{'wall s':>8}{'rows/s':>10}{'driver peak MB':>16}{'maxrss MB':>11}  detail"]
    for result in results:
        d, p = result["distill"], result["predict"]
        lines.append(f"{result['rows']:>9} {'distill':<8}{d['wall_seconds']:>8.1f}{d['rows_per_second']:>10.0f}"
                     f"{d['driver_peak_mb']:>16.1f}{d['driver_maxrss_mb']:>11.0f}  "
                     f"{d['train_rows']} trained in {d['train_seconds']:.0f}s; "
                     f"{d['holdout_evaluated']} of {d['holdout_rows']} held out evaluated")
        if p is not None:
            lines.append(f"{result['rows']:>9} {'predict':<8}{p['wall_seconds']:>8.1f}{p['rows_per_second']:>10.0f}"
                         f"{p['driver_peak_mb']:>16.1f}{p['driver_maxrss_mb']:>11.0f}  {p['predicted']} predicted")
    if len(results) > 1:
        small, large = results[0], results[-1]
        for job in ("distill", "predict"):
            if large[job] is None:
                continue
            ratio = large[job]["driver_peak_mb"] / max(small[job]["driver_peak_mb"], 1.0)
            lines.append(f"{job}: driver peak at {large['rows']} rows over {small['rows']} rows: {ratio:.2f}x "
                         f"(rows {large['rows'] / small['rows']:.0f}x)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--train-rows", type=int, default=20_000,
                        help="about this many rows have unanimous votes and are trained on (1 epoch)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1, help="predict: student replicas")
    parser.add_argument("--commit-rows", type=int, default=8192, help="predict: rows per committed file")
    parser.add_argument("--distill-only", action="store_true", help="skip predict (for sizes where it takes long)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--job", choices=["distill", "predict"], help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--student", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        child(args)
        return

    from pipeline.smoke import build_tiny_student

    started = time.time()
    init_quiet_ray()
    with tempfile.TemporaryDirectory(prefix="student_scale_model_") as tmp:
        student = build_tiny_student(Path(tmp) / "student", [" ".join(WORDS + LABELS)] * 20)
        results = [run_size(rows, student, args) for rows in args.rows]
    table = format_table(results)
    print("\n" + table)
    settings = {key: value for key, value in vars(args).items() if key not in ("job", "workdir", "student", "json")}
    print(f"\nsettings: {settings}; {time.time() - started:.0f}s in all")
    write_figures(args.json, args, results=results, table=table.splitlines())


if __name__ == "__main__":
    main()
