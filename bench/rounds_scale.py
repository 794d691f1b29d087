"""Rounds steps at scale: seconds and driver peak RSS, the streamed step beside the former one.

Three steps, each on synthetic labelled rows (in 40 files):

- FreeAL ``merge`` (round r-1's labels with a fifth of them relabelled): ``streamed`` is
  ``pipeline.freeal_steps.run_merge`` (the relabelled rows in one object-store lookup, the earlier
  labels mapped through it by Ray Data, each task writing its file); ``former`` is the merge as it
  was (whole tables on the driver, ``to_pylist`` of every row, one output file).
- FreeAL ``select`` (score every row with the warm-up student, split clean/noisy per class, demos):
  ``streamed`` is ``pipeline.freeal_select.run_select``; ``former`` is the select as it was (the
  labelled set read on the driver, probabilities and embeddings collected as float64 lists from one
  scoring actor, the split and the per-row demos in numpy, one file per output). The warm-up student
  is the smoke's tiny random BERT (hidden size 32): the figures are the data plane's, not a model's.
- the synthesis ``filter`` (2,000 new examples, a tenth of them copies of training texts, against
  every training text, and 400 gold texts): ``streamed`` is ``pipeline.round_steps.run_filter`` (the examples indexed,
  the training texts probing the index in Ray tasks); ``former`` is the filter as it was (every
  training text MinHashed into one index on the driver).

The former code is rewritten here so that it runs beside the new. Each run is a process of its own
(the driver's peak RSS is its own ``ru_maxrss``), with a local Ray cluster.

    .venv/bin/python bench/rounds_scale.py [--steps merge select filter] [--rows 100000 1000000]
                                           [--skip-former-above 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import schemas  # noqa: E402

LABELS = ["negative", "neutral", "positive"]


VOCABULARY = 5000  # synthetic words w0 .. w4999


def text_of(i: int) -> str:
    """A sentence of 8 to 14 words drawn by a generator seeded with the row number: distinct rows share
    few 3-word shingles, as real texts do."""
    x, words = i, []
    for _ in range(8 + i % 7):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        words.append(f"w{(x >> 33) % VOCABULARY}")
    return " ".join(words)


def rows(first: int, n: int, shift: int) -> pa.Table:
    ids = [f"row-{i:09d}" for i in range(first, first + n)]
    labels = [LABELS[(i + shift) % 3] for i in range(first, first + n)]
    return pa.table({
        "id": ids, "text": [text_of(i) for i in range(first, first + n)],
        "votes": [[label] * 4 for label in labels], "hard_label": labels,
        "soft_label": [[1.0 if x == label else 0.0 for x in LABELS] for label in labels],
        "consistency": [1.0] * n, "n_valid": [4] * n, "rationale": [None] * n, "prompt_tokens": [100] * n,
        "completion_tokens": [20] * n, "truncated": [False] * n, "teacher_model": ["t"] * n, "prompt_hash": ["h"] * n,
    }, schema=schemas.LABELLED)


def write_parts(folder: Path, n: int, files: int, shift: int = 0) -> None:
    folder.mkdir(parents=True)
    per = -(-n // files)
    for k in range(files):
        first = k * per
        if first < n:
            pq.write_table(rows(first, min(per, n - first), shift), folder / f"part-{k}.parquet")


def write_run(step: str, folder: Path, n: int, shared: Path) -> None:
    """The rounds folder a step reads, under ``folder``; what both runs must share (the warm-up student:
    its tokenizer's training is not deterministic) under ``shared``."""
    if step == "merge":
        write_parts(folder / "rounds/0/labels/data", n, 40)
        write_parts(folder / "rounds/1/relabelled/data", n // 5, 8, shift=1)
    elif step == "select":
        write_parts(folder / "rounds/0/labels/data", n, 40)
        model = shared / "warmup-model"
        if not model.exists():
            from pipeline import model_store
            from pipeline.smoke import build_tiny_student

            spread_student(build_tiny_student(model, [text_of(i) for i in range(200)]))
            model_store.seal(model, {"labels": LABELS, "max_length": 32, "mode": "cls"})
        (folder / "rounds/0/warmup").mkdir(parents=True)
        (folder / "rounds/0/warmup/report.json").write_text(json.dumps({"model": str(model)}))
    else:  # filter: round 0's training data, round 1's candidates, small gold sets
        write_parts(folder / "labels/data", n, 40)
        candidates = [{"request_id": f"q{i}", "source": "bench", "text": text_of(i * 97 % n) if i % 10 == 0 else
                       text_of(n + i), "label": LABELS[i % 3], "problem": None,
                       "prompt_tokens": 100, "completion_tokens": 40} for i in range(2000)]
        from pipeline.round_steps import CANDIDATES

        (folder / "rounds/rounds/1/extra").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(candidates, schema=CANDIDATES),
                       folder / "rounds/rounds/1/extra/candidates.parquet")
        for name, start in (("validation", 10 ** 9), ("test", 2 * 10 ** 9)):
            (folder / f"{name}.jsonl").write_text("".join(
                json.dumps({"text": text_of(start + i), "label": LABELS[i % 3]}) + "\n"
                for i in range(200)))


def spread_student(model: Path) -> None:
    """Give the random tiny student a 3-label head whose logits vary from text to text (centred, about 1.5
    apart), so that its losses spread as a trained student's do: a random head gives every text nearly
    the same probabilities, and the small-loss split would split noise."""
    import torch

    from pipeline.student import load_student, tokenize

    tokenizer, student = load_student(str(model), LABELS)
    batch = tokenize(tokenizer, [text_of(i) for i in range(512)], 32)
    with torch.no_grad():
        out = student(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
        pooled = student.bert.pooler(out.hidden_states[-1])
        centred = pooled - pooled.mean(dim=0)
        scale = 1.5 / (centred @ student.classifier.weight.T).std()
        student.classifier.weight.mul_(scale)
        student.classifier.bias.copy_(-(pooled.mean(dim=0) @ student.classifier.weight.T))
    student.save_pretrained(model)
    tokenizer.save_pretrained(model)


def config_for(step: str, folder: Path):
    from pipeline.config import config_from_dict

    rounds_output = str(folder / "rounds") if step == "filter" else str(folder)
    return config_from_dict({
        "task": {"name": "t", "instruction": "i", "labels": [{"name": x, "description": x} for x in LABELS]},
        "teacher": {"model": "m"}, "data": {"input": "in", "output": str(folder / "labels")},
        "student": {"model": "s", "max_length": 32},
        "distill": {"output": "d", "validation": str(folder / "validation.jsonl"),
                    "test": str(folder / "test.jsonl"), "num_workers": 2},
        "rounds": {"output": rounds_output, "strategy": "extrapolation" if step == "filter" else "freeal",
                   "freeal_split": "gmm"},
    })


def former_merge(folder: Path) -> dict:
    """The merge before streaming: every row through Python on the driver, one output file."""
    from pipeline import storage

    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    fs = pafs.LocalFileSystem()
    previous = storage.read_parquet(fs, str(folder / "rounds/0/labels/data"))
    relabelled = storage.read_parquet(fs, str(folder / "rounds/1/relabelled/data"))
    relabelled = relabelled.filter(pc.greater(relabelled.column("n_valid"), 0))
    new = {row["id"]: row for row in relabelled.to_pylist()}
    out, changed = [], 0
    for row in previous.to_pylist():
        replacement = new.get(row["id"])
        if replacement is not None:
            changed += replacement["hard_label"] != row["hard_label"]
            row = replacement
        out.append(row)
    table = pa.Table.from_pylist(out, schema=schemas.LABELLED)
    storage.write_parquet_atomic(fs, str(folder / "rounds/1/labels/data/part-0.parquet"), table)
    return {"rows": table.num_rows, "labels_changed": changed}


def former_select(folder: Path) -> dict:
    """The select before streaming: the labelled set on the driver, scores collected from one actor."""
    import json as json_

    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import ray
    import ray.data

    from pipeline import storage
    from pipeline.freeal import diverse_demos, nearest_demos, small_loss_split
    from pipeline.predict import StudentPredictor
    from pipeline.round_steps import labelled_rows

    config = config_for("select", folder)
    rounds, names = config.rounds, LABELS
    fs = pafs.LocalFileSystem()
    labelled = storage.read_parquet(fs, str(folder / "rounds/0/labels/data"))
    labelled = labelled.filter(pc.is_valid(labelled.column("hard_label")))
    labels = np.array([names.index(x) for x in labelled.column("hard_label").to_pylist()])
    model = json_.loads((folder / "rounds/0/warmup/report.json").read_text())["model"]
    scored = ray.data.from_arrow(labelled.select(["id", "text"])).map_batches(
        StudentPredictor, fn_constructor_kwargs={"model_dir": model, "storage_config": config.storage,
                                                 "embeddings": True},
        batch_size=256, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1)).to_arrow_refs()
    result = pa.concat_tables(ray.get(scored))
    order = {row_id: i for i, row_id in enumerate(result.column("id").to_pylist())}
    at = [order[row_id] for row_id in labelled.column("id").to_pylist()]
    probabilities = np.array(result.column("probabilities").to_pylist(), dtype=float)[at]
    embeddings = np.array(result.column("embedding").to_pylist(), dtype=float)[at]
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))
    clean = small_loss_split(losses, labels, rounds.freeal_split, rounds.freeal_clean_fraction)
    noisy = ~clean
    pseudo = noisy & (probabilities.max(axis=1) >= rounds.freeal_pseudo_confidence)
    demo_rows, _ = diverse_demos(embeddings, losses, labels, clean, rounds.freeal_demos_per_class,
                                 rounds.freeal_demo_pool)
    pool = np.array(sorted(i for rows in demo_rows.values() for i in rows), dtype=int)
    texts, ids = labelled.column("text").to_pylist(), labelled.column("id").to_pylist()
    relabel = []
    noisy_rows = np.flatnonzero(noisy)
    for row, near in zip(noisy_rows, nearest_demos(embeddings[noisy_rows], embeddings[pool], rounds.freeal_neighbours)):
        demos = [{"text": texts[pool[j]], "label": names[labels[pool[j]]]} for j in near]
        relabel.append({"id": ids[row], "text": texts[row], "demos": json_.dumps(demos)})
    predicted = probabilities.argmax(axis=1)
    train = [{"text": texts[i], "label": names[labels[i]], "source": "clean", "prompt_tokens": 0,
              "completion_tokens": 0} for i in np.flatnonzero(clean)]
    train += [{"text": texts[i], "label": names[predicted[i]], "source": "pseudo", "prompt_tokens": 0,
               "completion_tokens": 0} for i in np.flatnonzero(pseudo)]
    out = folder / "rounds/0/selection"
    storage.write_parquet_atomic(fs, str(out / "student_data/data/part-0.parquet"), labelled_rows(
        train, config.task, "t", "freeal", ids=[ids[i] for i in np.flatnonzero(clean)] +
        [ids[i] for i in np.flatnonzero(pseudo)]))
    storage.write_parquet_atomic(fs, str(out / "relabel_input/part-0.parquet"), pa.Table.from_pylist(relabel))
    return {"rows": labelled.num_rows, "clean": int(clean.sum()), "to_relabel": len(relabel)}


def former_filter(folder: Path) -> dict:
    """The filter before streaming: every training text MinHashed into one index on the driver."""
    import pyarrow.fs as pafs

    from pipeline import storage
    from pipeline.filters import NearDuplicateIndex
    from pipeline.round_steps import evaluation_texts

    config = config_for("filter", folder)
    fs = pafs.LocalFileSystem()
    training = storage.read_parquet(fs, str(folder / "labels/data"), columns=["text"]).column("text").to_pylist()
    candidates = storage.read_parquet(fs, str(folder / "rounds/rounds/1/extra/candidates.parquet")).to_pylist()
    evaluation, seen = NearDuplicateIndex(0.7), NearDuplicateIndex(0.7)
    for text in evaluation_texts(config):
        evaluation.add(text)
    for text in training:
        seen.add(text)
    kept = 0
    for row in candidates:
        if evaluation.match(row["text"]) is None and seen.match(row["text"]) is None:
            seen.add(row["text"])
            kept += 1
    return {"rows": len(training), "kept": kept}


def child(step: str, mode: str, folder: str) -> None:
    started = time.time()
    from pipeline.cluster import init_ray

    if mode == "former":
        if step == "select":
            init_ray()
        report = {"merge": former_merge, "select": former_select, "filter": former_filter}[step](Path(folder))
    else:
        from pipeline.freeal_select import run_select
        from pipeline.freeal_steps import run_merge
        from pipeline.round_steps import run_filter

        init_ray()
        run = {"merge": (run_merge, 1), "select": (run_select, 0), "filter": (run_filter, 1)}[step]
        report = run[0](config_for(step, Path(folder)), run[1], log=lambda _: None)
    outcome = {"merge": lambda: report["labels_changed"], "select": lambda: report["clean"],
               "filter": lambda: report["kept"]}[step]()
    print(json.dumps({"seconds": round(time.time() - started, 1), "outcome": outcome,
                      "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


OUTCOME = {"merge": "labels changed", "select": "clean rows", "filter": "examples kept"}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", nargs="+", default=["merge", "select", "filter"], choices=list(OUTCOME))
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--skip-former-above", type=int, default=10_000_000)
    args = parser.parse_args()
    results = []
    for step in args.steps:
        for n in args.rows:
            with tempfile.TemporaryDirectory(prefix="raydistill-rounds-scale-") as tmp:
                for mode in ("streamed", "former"):
                    if mode == "former" and n > args.skip_former_above:
                        continue
                    folder = Path(tmp) / mode
                    write_run(step, folder, n, Path(tmp))
                    out = subprocess.run([sys.executable, __file__, "--child", step, mode, str(folder)],
                                         capture_output=True, text=True, cwd=ROOT)
                    if out.returncode != 0:
                        raise SystemExit(out.stderr[-3000:])
                    result = {"step": step, "rows": n, "mode": mode,
                              **json.loads(out.stdout.strip().splitlines()[-1])}
                    results.append(result)
                    print(json.dumps(result), flush=True)
    print("\nstep    rows      mode      seconds  driver peak RSS MB  outcome")
    for r in results:
        print(f"{r['step']:<7} {r['rows']:>8}  {r['mode']:<8} {r['seconds']:>8}  {r['driver_peak_rss_mb']:>18}  "
              f"{r['outcome']} {OUTCOME[r['step']]}")


if __name__ == "__main__":
    main()
