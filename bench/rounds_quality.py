"""Error-extrapolation rounds: validation and test accuracy per round, against the same
number of examples added at random, and against round 0's data alone.

Round 0 trains the student (pretrained MiniLM-L6, ``pipeline.distill.run_distill``,
Ray Train DDP) on a stratified subsample of the train split labelled by the
SIMULATED teacher of ``bench/distill_quality.py`` (8 votes, mode ``cls``).
Each round then runs the real round code on the student's real errors:

1. the validation rows the previous student got wrong
   (``pipeline.round_steps.validation_errors``);
2. a SIMULATED synthesizer writes ``m`` examples per error (below) into the
   round's ``candidates.parquet``, in place of the LLM;
3. ``pipeline.round_steps.run_filter`` (validity, length, near duplicates of
   the training data, leakage of validation/test texts) makes the round's
   labelled extra data;
4. ``run_distill`` retrains on round 0's data plus every extra so far
   (``distill.extra_labels``) and evaluates on validation and test.

The control arm ("random") adds, each round, as many examples as the
extrapolation arm kept, drawn at random from the same pool with their gold
labels: it tells targeted examples from merely more data.

Simulated synthesizer. No instruction-tuned LLM can be had offline, so a
"written" example is a real train-split text from a pool disjoint from round
0's rows (and never shown twice): for an error with gold label ``y`` it takes
the ``m`` pool texts of label ``y`` most similar to the error text (cosine of
word-count vectors), i.e. an LLM that writes on-label texts like the error.
With probability ``--off-label`` (default 0.1) an example is instead the most
similar text of another label, still announced as ``y``: the LLM sometimes
writes an example that does not carry the label it was asked for.
Real LLM examples are more varied and less faithful; the figures show what
the loop does with targeted examples, not how good a real LLM is at writing them.

    .venv/bin/python bench/rounds_quality.py [--dataset financial_phrasebank] [--rounds 3] \
        [--train-rows 200] [--examples-per-error 4] [--max-errors 40] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from common import add_student_arguments, init_quiet_ray, minilm_path
from distill_quality import (
    TeacherModel, WordProfiles, distill_config, labelled_rows, pick_max_length, read_jsonl, simulate_votes,
    stratified_sample, write_jsonl, write_labelled,
)

from pipeline import storage
from pipeline.config import RoundsConfig
from pipeline.round_steps import CANDIDATES, run_filter, validation_errors
from pipeline.rounds_layout import RoundsLayout, extra_uri

REPO = Path(__file__).resolve().parents[1]


def bag(text: str) -> Counter:
    return Counter(re.findall(r"[a-z]+|\d+", text.lower()))


def cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    norm = (sum(v * v for v in a.values()) * sum(v * v for v in b.values())) ** 0.5
    return dot / norm if norm else 0.0


class SimulatedSynthesizer:
    """Writes "examples like this one" by picking similar unused pool texts (see the module docstring)."""

    def __init__(self, pool: list[dict[str, Any]], off_label: float, seed: int):
        self.pool = pool
        self.bags = [bag(row["text"]) for row in pool]
        self.used: set[int] = set()
        self.off_label = off_label
        self.rng = np.random.default_rng(seed)

    def write(self, text: str, label: str, m: int) -> list[str]:
        target = bag(text)
        out = []
        for _ in range(m):
            on_label = self.rng.random() >= self.off_label
            best, best_score = None, -1.0
            for i, row in enumerate(self.pool):
                if i in self.used or (row["label"] == label) != on_label:
                    continue
                score = cosine(target, self.bags[i])
                if score > best_score:
                    best, best_score = i, score
            if best is None:
                break
            self.used.add(best)
            out.append(self.pool[best]["text"])
        return out

    def random(self, n: int) -> list[dict[str, Any]]:
        free = [i for i in range(len(self.pool)) if i not in self.used]
        chosen = self.rng.choice(free, size=min(n, len(free)), replace=False)
        self.used.update(int(i) for i in chosen)
        return [self.pool[int(i)] for i in chosen]


class Round0:
    """Round 0 of a benchmark run: a stratified train subsample labelled by the simulated teacher
    (mode cls), validation and test subsamples, the rest of the train split as the synthesizer's pool."""

    def __init__(self, folder: Path, args, workdir: Path):
        self.args = args
        self.labels = [{"name": item["name"], "description": item["description"]}
                       for item in json.loads((folder / "labels.json").read_text())]
        self.label_names = [label["name"] for label in self.labels]
        self.index = {name: i for i, name in enumerate(self.label_names)}
        train = read_jsonl(folder / "train.jsonl")
        chosen_idx = set(stratified_sample([r["label"] for r in train], args.train_rows, args.seed).tolist())
        chosen = [train[i] for i in sorted(chosen_idx)]
        self.chosen = chosen  # round 0's rows, with their gold labels
        self.pool = [row for i, row in enumerate(train) if i not in chosen_idx]
        self.splits = {}
        for split, cap in (("validation", args.validation_rows), ("test", args.test_rows)):
            rows = read_jsonl(folder / f"{split}.jsonl")
            keep = stratified_sample([r["label"] for r in rows], cap, args.seed)
            self.splits[split] = write_jsonl(workdir / f"{split}.jsonl", [rows[i] for i in keep])
        texts = [r["text"] for r in chosen]
        self.profiles = WordProfiles([r["text"] for r in train], [self.index[r["label"]] for r in train],
                                     len(self.label_names))
        votes = simulate_votes(texts, [self.index[r["label"]] for r in chosen], self.label_names, self.profiles,
                               TeacherModel(), args.seed)
        self.labels_dir = write_labelled(workdir / "labels", labelled_rows([r["id"] for r in chosen], texts, votes,
                                                                           self.label_names), self.label_names)
        self.max_length = pick_max_length(texts, args.student, args.max_length)
        self.name = folder.name

    def config(self, output: Path, **rounds: Any):
        config = distill_config(self.name, self.labels, self.labels_dir, output / "unused",
                                self.splits["validation"], self.splits["test"], "cls", self.max_length, self.args)
        return dataclasses.replace(config, rounds=RoundsConfig(output=str(output), **rounds))


def candidates_table(rows: list[tuple[str, str, str]]) -> pa.Table:
    """(text, label, source) -> the synthesize step's candidates.parquet."""
    return pa.Table.from_pylist([
        {"request_id": f"sim/{i}", "source": source, "text": text, "label": label, "problem": None,
         "prompt_tokens": 0, "completion_tokens": 0}
        for i, (text, label, source) in enumerate(rows)
    ], schema=CANDIDATES)


def run_arm(arm: str, base, rounds: int, synthesizer: SimulatedSynthesizer, added_per_round: list[int],
            args, round0: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Round 0 .. rounds of one arm; ``added_per_round`` is filled by the extrapolation arm, read by random."""
    from pipeline.distill import run_distill

    layout = RoundsLayout.of(base)
    results = []
    for r in range(rounds + 1):
        if r == 0 and round0 is not None:  # the same training run in both arms: trained once
            results.append(round0)
            continue
        started = time.time()
        added, errors = 0, None
        if r > 0:
            if arm == "extrapolation":
                wrong = validation_errors(base, r - 1).to_pylist()
                if args.max_errors and len(wrong) > args.max_errors:
                    keep = np.random.default_rng(r).permutation(len(wrong))[: args.max_errors]
                    wrong = [wrong[i] for i in sorted(keep)]
                errors = len(wrong)
                written = [(text, row["label"], f"validation row {row['row']}")
                           for row in wrong for text in synthesizer.write(row["text"], row["label"],
                                                                          args.examples_per_error)]
            else:
                written = [(row["text"], row["label"], "random pool row")
                           for row in synthesizer.random(added_per_round[r - 1])]
            extra = layout.round_dir(r, "extra")
            storage.delete_dir(layout.fs, layout.path(*extra))
            storage.write_parquet_atomic(layout.fs, layout.path(*extra, "candidates.parquet"),
                                         candidates_table(written))
            report = run_filter(base, r, log=lambda _: None)
            added = report["kept"]
            if arm == "extrapolation":
                added_per_round.append(added)
        extras = [extra_uri(base, q) for q in range(1, r + 1)
                  if storage.list_files(layout.fs, layout.path(*layout.round_dir(q, "extra", "data")))]
        config = dataclasses.replace(base, distill=dataclasses.replace(
            base.distill, extra_labels=extras, output=layout.uri_of(*layout.round_dir(r, "student"))))
        report = run_distill(config, log=lambda _: None)
        evaluation = report["evaluation"]
        results.append({
            "round": r, "errors": errors, "added": added, "train_rows": report["rows"]["train"],
            "validation_accuracy": evaluation["validation"]["accuracy"],
            "test_accuracy": evaluation["test"]["accuracy"], "test_macro_f1": evaluation["test"]["macro_f1"],
            "seconds": round(time.time() - started, 1),
        })
        print(f"[{arm}] round {r}: +{added} -> {report['rows']['train']} train rows; validation accuracy "
              f"{results[-1]['validation_accuracy']:.3f}, test accuracy {results[-1]['test_accuracy']:.3f} "
              f"({results[-1]['seconds']}s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="financial_phrasebank")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=200)
    parser.add_argument("--validation-rows", type=int, default=250)
    parser.add_argument("--test-rows", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--examples-per-error", type=int, default=4)
    parser.add_argument("--max-errors", type=int, default=40)
    parser.add_argument("--off-label", type=float, default=0.1)
    add_student_arguments(parser, REPO.parent / "shared" / "data", epochs=2)
    args = parser.parse_args()
    args.student = args.student or minilm_path()
    started = time.time()
    init_quiet_ray()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        setup = Round0(args.data_root / args.dataset, args, workdir)
        results, added_per_round = {}, []
        for arm in ("extrapolation", "random"):
            config = setup.config(workdir / arm, rounds=args.rounds)
            synthesizer = SimulatedSynthesizer(setup.pool, args.off_label, args.seed)
            round0 = results["extrapolation"][0] if arm == "random" else None
            results[arm] = run_arm(arm, config, args.rounds, synthesizer, added_per_round, args, round0)

    print("\n" + format_table(results))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"\nsettings: {settings}; {round(time.time() - started, 1)}s in all")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2))


def format_table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| round | arm | validation errors | added | train rows | validation accuracy | test accuracy | "
             "test macro-F1 |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in range(len(results["extrapolation"])):
        for arm in ("extrapolation", "random"):
            if r == 0 and arm == "random":
                continue  # round 0 is the same run in both arms: round 0's data only
            row = results[arm][r]
            lines.append(f"| {r} | {arm if r else 'round 0 data only'} | {row['errors'] if row['errors'] is not None else '-'} "
                         f"| {row['added']} | {row['train_rows']} | {row['validation_accuracy']:.3f} | "
                         f"{row['test_accuracy']:.3f} | {row['test_macro_f1']:.3f} |")
    base = results["extrapolation"][0]["test_accuracy"]
    last_x, last_r = results["extrapolation"][-1], results["random"][-1]
    lines.append(f"\nlast round vs round 0 only, test accuracy: extrapolation {last_x['test_accuracy'] - base:+.3f}, "
                 f"random {last_r['test_accuracy'] - base:+.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
