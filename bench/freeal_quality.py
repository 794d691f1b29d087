"""FreeAL: the student's test accuracy after each round, against the raw teacher labels and gold labels.

Per dataset, a stratified train subsample (``--pool-rows``) is the unlabelled
pool. The SIMULATED teacher of ``bench/distill_quality.py`` labels it (8 votes
per text, errors that depend on the text's words): round 0's labels. Then,
with the real FreeAL code on a real student (pretrained MiniLM-L6, Ray Train
DDP), each round runs

1. ``run_distill`` on the round's teacher labels: the warm-up student. Round
   0's warm-up is the baseline "raw teacher labels";
2. ``pipeline.freeal_select.run_select``: the warm-up student's loss per row,
   the small-loss split per class (``--split``), confident pseudo-labels for
   noisy rows, and for every noisy row its nearest diverse clean demos;
3. ``run_distill`` on that selection: the round's student;
4. (round r >= 1, before 1-3) relabelling of round r-1's noisy rows by the
   simulated teacher WITH DEMOS (below), then ``run_merge``.

A third arm trains the same student on the pool's gold labels: the ceiling.

Simulated teacher with demos. The teacher of ``distill_quality`` does not read
prompts, so the effect of in-context demos is simulated: each of the 8 votes
for a text copies the majority label of the text's demos with probability
``--demo-pull`` (default 0.5) and is otherwise drawn from the teacher's own
distribution for that text. Demos help exactly when the student's nearest
clean neighbours carry the text's true label, which is what FreeAL relies on;
a real LLM's response to demos is not measured here.

    .venv/bin/python bench/freeal_quality.py [--datasets sst2 trec] [--pool-rows 400] [--rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common import add_student_arguments, run_per_dataset
from distill_quality import (
    HEDGES, TeacherModel, labelled_rows, teacher_distribution, words, write_jsonl, write_labelled,
)
from rounds_quality import Round0

from pipeline import storage
from pipeline.config import ABSTAIN
from pipeline.freeal_select import run_select
from pipeline.freeal_steps import run_merge
from pipeline.rounds_layout import RoundsLayout, labels_uri, selection_uri, student_uri, warmup_uri

REPO = Path(__file__).resolve().parents[1]


def demo_votes(rows: list[dict[str, Any]], gold: dict[str, int], setup: Round0, pull: float, seed: int
               ) -> list[list[str]]:
    """8 votes per relabelled row: the demos' majority label with probability ``pull``, else the teacher's own."""
    model, names = TeacherModel(), setup.label_names
    rng = np.random.default_rng(seed)
    choices = list(names) + [ABSTAIN]
    votes = []
    for row in rows:
        y = gold[row["id"]]
        ll, n_words = setup.profiles.log_likelihood(row["text"], y)
        hedges = sum(w in HEDGES for w in words(row["text"]))
        probs, abstain, _, _ = teacher_distribution(ll, n_words, hedges, y, model)
        own = np.append(probs * (1 - abstain), abstain)
        demo_labels = [d["label"] for d in json.loads(row["demos"])]
        majority = Counter(demo_labels).most_common(1)[0][0] if demo_labels else None
        row_votes = []
        for _ in range(model.k):
            if majority is not None and rng.random() < pull:
                row_votes.append(majority)
            else:
                row_votes.append(choices[rng.choice(len(choices), p=own / own.sum())])
        votes.append(row_votes)
    return votes


def run_dataset(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.distill import run_distill

    setup = Round0(args.data_root / name, args, workdir)
    gold_file = write_jsonl(workdir / "pool-gold.jsonl", [{"text": r["text"], "label": r["label"]}
                                                          for r in setup.chosen])
    config = setup.config(workdir / "run", strategy="freeal", rounds=args.rounds, freeal_split=args.split,
                          freeal_gold=str(gold_file))
    layout = RoundsLayout.of(config)
    gold = {r["id"]: setup.index[r["label"]] for r in setup.chosen}
    storage.delete_dir(layout.fs, layout.path("rounds", "0", "labels"))
    Path(layout.path("rounds", "0")).mkdir(parents=True, exist_ok=True)
    Path(setup.labels_dir).rename(layout.path("rounds", "0", "labels"))

    def distill(labels: str, output: str) -> dict[str, Any]:
        run = dataclasses.replace(config, distill=dataclasses.replace(
            config.distill, labels=labels, extra_labels=[], output=output))
        return run_distill(run, log=lambda _: None)

    rounds = []
    for r in range(args.rounds + 1):
        started = time.time()
        changed = 0
        if r > 0:
            noisy = storage.read_parquet(layout.fs, storage.join(layout.path(*layout.round_dir(r - 1)),
                                                                 "selection", "relabel_input")).to_pylist()
            votes = demo_votes(noisy, gold, setup, args.demo_pull, args.seed + r)
            write_labelled(Path(layout.path(*layout.round_dir(r, "relabelled"))),
                           labelled_rows([row["id"] for row in noisy], [row["text"] for row in noisy], votes,
                                         setup.label_names), setup.label_names)
            changed = run_merge(config, r, log=lambda _: None)["labels_changed"]
        warm = distill(labels_uri(config, r), warmup_uri(config, r))
        selection = run_select(config, r, log=lambda _: None)
        student = distill(f"{selection_uri(config, r)}/student_data", student_uri(config, r))
        teacher = selection["teacher_accuracy"]
        rounds.append({
            "round": r, "labels_changed": changed, "teacher_accuracy": teacher["accuracy"],
            "clean_accuracy": teacher["clean_accuracy"], "noisy_accuracy": teacher["noisy_accuracy"],
            "clean": selection["clean"], "noisy": selection["noisy"], "pseudo_labelled": selection["pseudo_labelled"],
            "warmup_test_accuracy": warm["evaluation"]["test"]["accuracy"],
            "student_test_accuracy": student["evaluation"]["test"]["accuracy"],
            "student_test_macro_f1": student["evaluation"]["test"]["macro_f1"],
            "seconds": round(time.time() - started, 1),
        })
        row = rounds[-1]
        print(f"[{name}] round {r}: {changed} labels changed, teacher accuracy {row['teacher_accuracy']:.3f} "
              f"(clean {row['clean_accuracy']:.3f}, noisy {row['noisy_accuracy']:.3f}); test accuracy warm-up "
              f"{row['warmup_test_accuracy']:.3f}, student {row['student_test_accuracy']:.3f} ({row['seconds']}s)",
              flush=True)

    gold_labels = write_labelled(workdir / "gold", labelled_rows([r["id"] for r in setup.chosen],
                                                                 [r["text"] for r in setup.chosen],
                                                                 [[r["label"]] for r in setup.chosen],
                                                                 setup.label_names), setup.label_names)
    ceiling = distill(str(gold_labels), str(workdir / "gold-student"))["evaluation"]["test"]
    print(f"[{name}] gold labels: test accuracy {ceiling['accuracy']:.3f}", flush=True)
    return {"rounds": rounds, "gold": {"test_accuracy": ceiling["accuracy"], "test_macro_f1": ceiling["macro_f1"]}}


def format_table(results: dict[str, Any]) -> str:
    lines = ["| dataset | round | labels changed | teacher accuracy | on clean rows | on noisy rows | clean | noisy | "
             "pseudo-labelled | test acc., raw labels (warm-up) | test acc., FreeAL student |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, result in results.items():
        for row in result["rounds"]:
            lines.append(
                f"| {name} | {row['round']} | {row['labels_changed']} | {row['teacher_accuracy']:.3f} | "
                f"{row['clean_accuracy']:.3f} | {row['noisy_accuracy']:.3f} | {row['clean']} | {row['noisy']} | "
                f"{row['pseudo_labelled']} | {row['warmup_test_accuracy']:.3f} | {row['student_test_accuracy']:.3f} |")
    for name, result in results.items():
        raw = result["rounds"][0]["warmup_test_accuracy"]
        last = result["rounds"][-1]["student_test_accuracy"]
        lines.append(f"\n{name}, test accuracy: raw teacher labels {raw:.3f}, FreeAL last round {last:.3f} "
                     f"({last - raw:+.3f}), gold labels {result['gold']['test_accuracy']:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sst2"])
    parser.add_argument("--pool-rows", type=int, default=400, dest="train_rows")
    parser.add_argument("--validation-rows", type=int, default=250)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--split", default="gmm", choices=["gmm", "fraction"])
    parser.add_argument("--demo-pull", type=float, default=0.5)
    add_student_arguments(parser, REPO.parent / "shared" / "data", epochs=3)
    run_per_dataset(parser.parse_args(), run_dataset, format_table)


if __name__ == "__main__":
    main()
