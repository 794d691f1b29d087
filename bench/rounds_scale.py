"""Rounds steps at scale: seconds and driver peak RSS, the streamed step beside the former one.

So far one step: FreeAL's ``merge`` (round r-1's labels with round r's relabelled rows put in).

- ``streamed``: ``pipeline.freeal_steps.run_merge``: the relabelled rows sorted into one lookup in
  Ray's object store, the earlier labels mapped through it by Ray Data, each task writing its file.
- ``former``: the merge as it was before (whole tables read on the driver, ``to_pylist`` of every row,
  one output file), rewritten here so that it can run beside the new one.

Synthetic rows (``labelled`` rows in 40 files, a fifth of them relabelled in 8 files). Each run is a
process of its own (the driver's peak RSS is its own ``ru_maxrss``), with a local Ray cluster.

    .venv/bin/python bench/rounds_scale.py [--rows 100000 1000000] [--skip-former-above 1000000]
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


def rows(first: int, n: int, shift: int) -> pa.Table:
    ids = [f"row-{i:09d}" for i in range(first, first + n)]
    labels = [LABELS[(i + shift) % 3] for i in range(first, first + n)]
    return pa.table({
        "id": ids, "text": [f"synthetic text number {i} with a few words" for i in range(first, first + n)],
        "votes": [[label] * 4 for label in labels], "hard_label": labels,
        "soft_label": [[1.0 if x == label else 0.0 for x in LABELS] for label in labels],
        "consistency": [1.0] * n, "n_valid": [4] * n, "rationale": [None] * n, "prompt_tokens": [100] * n,
        "completion_tokens": [20] * n, "truncated": [False] * n, "teacher_model": ["t"] * n, "prompt_hash": ["h"] * n,
    }, schema=schemas.LABELLED)


def write_run(folder: Path, n: int) -> None:
    for sub, count, files, shift in (("rounds/0/labels/data", n, 40, 0), ("rounds/1/relabelled/data", n // 5, 8, 1)):
        (folder / sub).mkdir(parents=True)
        per = -(-count // files)
        for k in range(files):
            first = k * per
            if first < count:
                pq.write_table(rows(first, min(per, count - first), shift), folder / sub / f"part-{k}.parquet")


def config_for(folder: Path):
    from pipeline.config import config_from_dict

    return config_from_dict({
        "task": {"name": "t", "instruction": "i", "labels": [{"name": x, "description": x} for x in LABELS]},
        "teacher": {"model": "m"}, "data": {"input": "in", "output": "out"}, "student": {"model": "s"},
        "distill": {"output": "d", "validation": "v"},
        "rounds": {"output": str(folder), "strategy": "freeal"},
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


def child(mode: str, folder: str) -> None:
    started = time.time()
    if mode == "former":
        report = former_merge(Path(folder))
    else:
        from pipeline.cluster import init_ray
        from pipeline.freeal_steps import run_merge

        init_ray()
        report = run_merge(config_for(Path(folder)), 1, log=lambda _: None)
    print(json.dumps({"seconds": round(time.time() - started, 1), "rows": report["rows"],
                      "labels_changed": report["labels_changed"],
                      "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--skip-former-above", type=int, default=10_000_000)
    args = parser.parse_args()
    results = []
    for n in args.rows:
        with tempfile.TemporaryDirectory(prefix="raydistill-rounds-scale-") as tmp:
            for mode in ("streamed", "former"):
                if mode == "former" and n > args.skip_former_above:
                    continue
                folder = Path(tmp) / mode
                write_run(folder, n)
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)], capture_output=True,
                                     text=True, cwd=ROOT)
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                result = {"step": "merge", "rows": n, "mode": mode, **json.loads(out.stdout.strip().splitlines()[-1])}
                results.append(result)
                print(json.dumps(result), flush=True)
    print("\nstep   rows      mode      seconds  driver peak RSS MB  labels changed")
    for r in results:
        print(f"{r['step']:<6} {r['rows']:>8}  {r['mode']:<8} {r['seconds']:>8}  {r['driver_peak_rss_mb']:>18}  "
              f"{r['labels_changed']:>14}")


if __name__ == "__main__":
    main()
