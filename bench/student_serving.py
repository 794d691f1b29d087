"""Serving the student: texts/s and test accuracy of four ways to predict, one run, same model and texts.

  torch, input order     the prediction before this bench: batches of 64 texts in input order, each
                         padded to its longest text (``predict_proba(..., sort_by_length=False)``)
  torch, by length       batches of texts of like lengths, so that padding adds little (today's default)
  ONNX Runtime           the same batches through ``model.onnx`` (``raydistill export-onnx``)
  ONNX Runtime int8      the same with int8 weights (``raydistill export-onnx --int8``)

The model is an exported student: ``--model DIR``, or one the bench distils first with the real job
(``run_distill``) from the first ``--train-rows`` rows of SST-2's train split, each labelled by a
unanimous vote on its gold label. The texts are SST-2's test split (gold labels). Every arm uses all
cores (torch threads, ONNX Runtime intra-op threads); each is timed after a warm-up batch, and the
faster of ``--repeats`` passes is kept. The ONNX folders are copies made by ``export_onnx``.

    .venv/bin/python bench/student_serving.py [--model DIR] [--train-rows 1500] [--batch-size 64] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import init_quiet_ray, minilm_path, write_figures
from ddp_scaling import DATA, write_labelled
from distill_speed import read_jsonl

from pipeline.config import config_from_dict


def distil_model(workdir: Path, args: argparse.Namespace) -> str:
    from pipeline.distill import run_distill

    labels = json.loads((DATA / "labels.json").read_text())
    write_labelled(workdir / "labels", DATA / "train.jsonl", args.train_rows, [label["name"] for label in labels])
    config = config_from_dict({
        "task": {"name": "sst2", "instruction": "Classify the sentiment of the movie-review sentence.",
                 "labels": labels},
        "teacher": {"model": "gold-votes", "samples": 8},
        "data": {"input": str(workdir / "labels"), "output": str(workdir / "labels")},
        "student": {"model": minilm_path(), "max_length": 128},
        "distill": {"output": str(workdir / "run"), "mode": "cls", "epochs": 2, "seed": 0},
    })
    report = run_distill(config, log=lambda _: None)
    print(f"[bench] distilled {report['rows']['train']} rows in {report['time']['wall_seconds']:.0f}s", flush=True)
    return report["model"]


def measure(arm: str, folder: str, texts: list[str], gold: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import tasks
    from pipeline.onnx_student import load_for_inference
    from pipeline.student import predict_proba

    meta = json.loads((Path(folder) / "raydistill.json").read_text())
    engine = "torch" if arm.startswith("torch") else "onnx"
    tokenizer, model = load_for_inference(tasks.for_model(meta), folder, meta, engine, threads=os.cpu_count())
    by_length = arm != "torch, input order"
    predict_proba(model, tokenizer, texts[:args.batch_size], meta["max_length"], args.batch_size)  # warm-up
    best, probabilities = float("inf"), None
    for _ in range(args.repeats):
        started = time.perf_counter()
        probabilities = predict_proba(model, tokenizer, texts, meta["max_length"], args.batch_size,
                                      sort_by_length=by_length)
        best = min(best, time.perf_counter() - started)
    labels = meta["labels"]
    accuracy = float(np.mean([labels[i] == g for i, g in zip(probabilities.argmax(axis=1), gold)]))
    return {"arm": arm, "seconds": round(best, 2), "texts_per_second": round(len(texts) / best, 1),
            "test_accuracy": round(accuracy, 4), "probabilities": probabilities}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="an exported student folder (default: distil one first)")
    parser.add_argument("--train-rows", type=int, default=1500, help="SST-2 train rows the bench distils on")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from pipeline.onnx_student import export_onnx

    torch.set_num_threads(os.cpu_count() or 1)
    test = read_jsonl(DATA / "test.jsonl")
    texts, gold = [r["text"] for r in test], [r["label"] for r in test]
    runs = []
    with tempfile.TemporaryDirectory(prefix="student_serving_") as tmp:
        workdir = Path(tmp)
        if args.model is None:
            init_quiet_ray()
            args.model = distil_model(workdir, args)
        folders = {"torch": args.model, "onnx": str(workdir / "onnx"), "int8": str(workdir / "int8")}
        export_onnx(args.model, output=folders["onnx"])
        export_onnx(args.model, output=folders["int8"], int8=True)
        for arm, folder in (("torch, input order", "torch"), ("torch, by length", "torch"),
                            ("ONNX Runtime", "onnx"), ("ONNX Runtime int8", "int8")):
            runs.append(measure(arm, folders[folder], texts, gold, args))
            print(f"[bench] {arm}: {runs[-1]['texts_per_second']} texts/s", flush=True)

    base = runs[0]
    print(f"\n{len(texts)} SST-2 test texts, batch {args.batch_size}, max_length from the model, "
          f"{os.cpu_count()} cores; model {args.model}")
    print(f"\n{'arm':<20}{'seconds':>9}{'texts/s':>10}{'vs input order':>16}{'test acc':>10}{'acc change':>12}"
          f"{'max |dp|':>10}")
    for run in runs:
        run["speed_up"] = round(run["texts_per_second"] / base["texts_per_second"], 2)
        run["accuracy_points"] = round(100 * (run["test_accuracy"] - base["test_accuracy"]), 2)
        run["max_probability_difference"] = float(np.abs(run.pop("probabilities") - base["probabilities"]).max()) \
            if run is not base else 0.0
        print(f"{run['arm']:<20}{run['seconds']:>9.2f}{run['texts_per_second']:>10.1f}{run['speed_up']:>15.2f}x"
              f"{run['test_accuracy']:>10.4f}{run['accuracy_points']:>+11.2f}pt{run['max_probability_difference']:>10.4f}")
    base.pop("probabilities")
    write_figures(args.json, args, runs=runs)


if __name__ == "__main__":
    main()
