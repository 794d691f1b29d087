"""PromptMix: test accuracy with mixed examples, relabelled or not, against no augmentation.

Per dataset, round 0 is the set-up of ``bench/rounds_quality.py``: a stratified
train subsample labelled by the SIMULATED teacher of ``bench/distill_quality.py``
(8 votes, mode ``cls``), validation and test subsamples, the rest of the train
split as a pool. One PromptMix round then runs with the real code where it can:

1. ``pipeline.synthesis.mixing_plan``: per class Ci, ``--per-class`` examples in
   requests of 4, each with a partner class Cj and a ratio alpha in [0.5, 0.9];
2. a SIMULATED mixer (below) "writes" each request's examples into the round's
   ``candidates.parquet``, announced as Ci;
3. ``pipeline.round_steps.run_filter`` keeps the usable, new, non-leaking ones;
4. relabelling: the simulated teacher votes on the kept texts (8 votes each),
   as the labelling job would; ``pipeline.round_steps.relabel_report`` counts
   the changes;
5. ``run_distill`` trains the student four ways, each scored on the test split:
   ``none`` (round 0's data only), ``intended`` (+ the mixed examples with the
   labels they were written for), ``relabelled`` (+ the same texts with the
   teacher's labels, consistency filter as for round 0) and ``gold`` (+ the
   same texts with their gold labels: what a perfect relabeller would give).

Simulated mixer. No instruction-tuned LLM can be had offline, so a "written"
example is a real, unused pool text whose gold class is Ci or Cj. Its
"Ci-ness" is ``sigmoid((LL_Ci - LL_Cj) / (n_words * tau))`` from the
naive-Bayes word profiles of the simulated teacher (``tau`` as there); the
mixer takes the texts whose Ci-ness is closest to alpha. So a request with
alpha near 0.5 yields texts on the Ci/Cj boundary, some of them really Cj: like
an LLM asked for a 60/40 mix, it sometimes writes a text of the other class,
which is what relabelling is for. Real LLM texts are more varied; the figures
show what the relabel step does with boundary examples of a known shape, not
how well a real LLM mixes classes.

    .venv/bin/python bench/promptmix_quality.py [--datasets trec sst2] [--train-rows 120] \
        [--per-class 40] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import add_student_arguments, run_per_dataset
from distill_quality import TeacherModel, labelled_rows, simulate_votes, teacher_quality, write_labelled
from rounds_quality import Round0, candidates_table

from pipeline import storage
from pipeline.round_steps import relabel_report, run_filter
from pipeline.rounds_layout import RoundsLayout, extra_uri, relabelled_uri
from pipeline.synthesis import mixing_plan

REPO = Path(__file__).resolve().parents[1]
ARMS = ("none", "intended", "relabelled", "gold")


class SimulatedMixer:
    """Picks unused pool texts of Ci or Cj whose Ci-ness is closest to alpha (module docstring)."""

    def __init__(self, setup: Round0):
        self.pool = setup.pool
        self.gold = np.array([setup.index[row["label"]] for row in self.pool])
        self.ll = np.zeros((len(self.pool), len(setup.label_names)))
        self.n_words = np.zeros(len(self.pool))
        for i, row in enumerate(self.pool):
            self.ll[i], self.n_words[i] = setup.profiles.log_likelihood(row["text"], self.gold[i])
        self.used = np.zeros(len(self.pool), dtype=bool)
        self.tau = TeacherModel().tau

    def write(self, ci: int, cj: int, alpha: float, n: int) -> list[dict[str, Any]]:
        free = np.flatnonzero(~self.used & np.isin(self.gold, [ci, cj]))
        margin = (self.ll[free, ci] - self.ll[free, cj]) / (np.maximum(self.n_words[free], 1) * self.tau)
        ci_ness = 1 / (1 + np.exp(-np.clip(margin, -50, 50)))
        chosen = free[np.argsort(np.abs(ci_ness - alpha), kind="stable")[:n]]
        self.used[chosen] = True
        return [self.pool[i] for i in chosen]


def run_dataset(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.distill import run_distill

    setup = Round0(args.data_root / name, args, workdir)
    names = setup.label_names
    config = setup.config(workdir / "run", strategy="promptmix", mix_per_class=args.per_class, mix_per_request=4)
    layout = RoundsLayout.of(config)
    mixer = SimulatedMixer(setup)

    written, gold_of = [], {}
    for mix in mixing_plan(names, args.per_class, 4, 0.5, 0.9, seed=1):
        for row in mixer.write(setup.index[mix.label], setup.index[mix.partner], mix.alpha, mix.n):
            written.append((row["text"], mix.label, f"mix {mix.alpha:.2f} {mix.label} + {mix.partner}"))
            gold_of[row["text"]] = row["label"]
    extra = layout.round_dir(1, "extra")
    storage.write_parquet_atomic(layout.fs, layout.path(*extra, "candidates.parquet"), candidates_table(written))
    filtered = run_filter(config, 1, log=lambda _: None)

    kept = storage.read_parquet(layout.fs, layout.path(*extra, "data")).to_pylist()
    ids, texts = [r["id"] for r in kept], [r["text"] for r in kept]
    gold = [gold_of[t] for t in texts]
    votes = simulate_votes(texts, [setup.index[g] for g in gold], names, setup.profiles, TeacherModel(), args.seed)
    relabelled = labelled_rows(ids, texts, votes, names)
    write_labelled(Path(layout.path("rounds", "1", "relabelled")), relabelled, names)
    gold_dir = write_labelled(workdir / "gold-extra", labelled_rows(ids, texts, [[g] for g in gold], names), names)
    stats = relabel_report(config, 1)
    intended_right = float(np.mean([r["hard_label"] == g for r, g in zip(kept, gold)]))
    teacher = teacher_quality(relabelled, gold)
    print(f"[{name}] {filtered['candidates']} written, {filtered['kept']} kept; intended label right on "
          f"{intended_right:.3f}; teacher relabelled {stats['relabelled']}, majority right on "
          f"{teacher['majority_accuracy']:.3f}, unanimous rows {teacher['per_threshold']['1']}", flush=True)

    extras = {"none": [], "intended": [extra_uri(config, 1)], "relabelled": [relabelled_uri(config, 1)],
              "gold": [str(gold_dir)]}
    scores = {}
    for arm in ARMS:
        started = time.time()
        run = dataclasses.replace(config, distill=dataclasses.replace(
            config.distill, extra_labels=extras[arm], output=str(workdir / f"student-{arm}")))
        report = run_distill(run, log=lambda _: None)
        test = report["evaluation"]["test"]
        scores[arm] = {"train_rows": report["rows"]["train"], "test_accuracy": test["accuracy"],
                       "test_macro_f1": test["macro_f1"], "seconds": round(time.time() - started, 1)}
        print(f"[{name}] {arm}: {scores[arm]['train_rows']} train rows, test accuracy "
              f"{test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f} ({scores[arm]['seconds']}s)", flush=True)
    return {"filter": filtered, "relabel": stats, "intended_label_accuracy": intended_right,
            "teacher": {"majority_accuracy": teacher["majority_accuracy"], "unanimous": teacher["per_threshold"]["1"]},
            "arms": scores}


def format_table(results: dict[str, Any]) -> str:
    lines = ["| dataset | mixed kept | intended label right | relabelled | arm | train rows | test accuracy | "
             "test macro-F1 |", "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, result in results.items():
        for arm in ARMS:
            score = result["arms"][arm]
            lines.append(f"| {name} | {result['filter']['kept']} | {result['intended_label_accuracy']:.3f} | "
                         f"{result['relabel']['relabelled']} | {arm} | {score['train_rows']} | "
                         f"{score['test_accuracy']:.3f} | {score['test_macro_f1']:.3f} |")
    for name, result in results.items():
        arms = result["arms"]
        base = arms["none"]["test_accuracy"]
        lines.append(f"\n{name}, test accuracy against no augmentation: " + ", ".join(
            f"{arm} {arms[arm]['test_accuracy'] - base:+.3f}" for arm in ARMS[1:]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["trec", "sst2"])
    parser.add_argument("--train-rows", type=int, default=120)
    parser.add_argument("--validation-rows", type=int, default=250)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--per-class", type=int, default=40, help="mixed examples asked for per class")
    add_student_arguments(parser, REPO.parent / "shared" / "data", epochs=3)
    run_per_dataset(parser.parse_args(), run_dataset, format_table)


if __name__ == "__main__":
    main()
