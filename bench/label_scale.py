"""Resume at scale: how long a labelling job takes to start labelling when millions of rows are committed.

For each size N (default 1M and 10M):

1. A committed output of N labelled rows is written in the job's own format
   (``schemas.LABELLED``, ``teacher.commit_rows`` rows a file, a manifest that
   matches the config), and a parquet corpus holding those N ids plus
   ``--left`` new rows. Rows are synthetic: this measures the data plane.
2. The labelling job runs on it in a child process (the tiny smoke teacher
   labels the rows left). The child reports the seconds from the job's start
   until its "rows ... left" line (the resume overhead: committed ids indexed,
   corpus scanned and counted), the whole run, the committed files listed and
   read, and its own peak RSS (the driver's).
3. At the smallest size only, today's former design is measured beside it on
   the former layout (one file per 64 rows): every committed file read one by
   one on the driver into one string array, and one ``is_in`` hash table built
   over it (what each batch's filter did). At 10M that arm would take about an
   hour and is skipped.

    .venv/bin/python bench/label_scale.py [--sizes 1000000 10000000] [--left 2000] [--json OUT]

``--fresh ROWS`` instead labels a fresh corpus of ROWS rows end to end (nothing
committed before) and reports the whole job's rows/s, the files written and
the driver's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import schemas  # noqa: E402
from pipeline.config import config_from_dict, to_dict  # noqa: E402

WORDS = "profit sales rose fell market shares quarter growth loss company orders record".split()
CORPUS_ROWS_PER_FILE = 100_000
OLD_SHARD_ROWS = 64


def row_id(n: int) -> str:
    return f"doc-{n:010d}"


def texts(n: int, offset: int) -> list[str]:
    return [" ".join(WORDS[(offset + i + j) % len(WORDS)] for j in range(6 + (offset + i) % 9)) for i in range(n)]


def labelled_table(first: int, n: int, config: Any) -> pa.Table:
    labels = config.task.label_names
    k = config.teacher.samples
    votes = [[labels[(first + i + j) % len(labels)] for j in range(k)] for i in range(n)]
    soft = [[sum(v == label for v in row) / k for label in labels] for row in votes]
    hard = [max(labels, key=row.count) for row in votes]
    return pa.Table.from_pydict({
        "id": [row_id(first + i) for i in range(n)],
        "text": texts(n, first),
        "votes": votes,
        "hard_label": hard,
        "soft_label": soft,
        "consistency": [max(s) for s in soft],
        "n_valid": [k] * n,
        "rationale": [f"Answer: {h}" for h in hard],
        "prompt_tokens": [90] * n,
        "completion_tokens": [4 * k] * n,
        "truncated": [False] * n,
        "teacher_model": [config.teacher.model] * n,
        "prompt_hash": ["synthetic"] * n,
    }, schema=schemas.LABELLED)


def write_committed(folder: Path, committed: int, rows_per_file: int, config: Any) -> int:
    """``committed`` labelled rows in files of ``rows_per_file``; returns the number of files."""
    data = folder / "data"
    data.mkdir(parents=True)
    template = labelled_table(0, rows_per_file, config)
    files = 0
    for first in range(0, committed, rows_per_file):
        n = min(rows_per_file, committed - first)
        table = template.slice(0, n).set_column(0, schemas.LABELLED.field("id"),
                                                pa.array([row_id(first + i) for i in range(n)]))
        pq.write_table(table, data / f"part-{first:012d}.parquet", compression="zstd")
        files += 1
    return files


def write_corpus(folder: Path, committed: int, left: int) -> None:
    folder.mkdir(parents=True)
    total = committed + left
    for first in range(0, total, CORPUS_ROWS_PER_FILE):
        n = min(CORPUS_ROWS_PER_FILE, total - first)
        pq.write_table(pa.table({"id": [row_id(first + i) for i in range(n)], "text": texts(n, first)}),
                       folder / f"corpus-{first:012d}.parquet")


def child(config_path: str) -> None:
    """Run the job here and write its figures beside the config (this process is the job's driver)."""
    from pipeline.config import load_config
    from pipeline.committed import OutputLayout, committed_files
    from pipeline.labeling import run_labeling
    from pipeline import storage

    config = load_config(config_path)
    started = time.time()
    marks: dict[str, float] = {}

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if " left" in line and "resume" not in marks:
            marks["resume"] = time.time() - started

    fs, root = storage.resolve(config.data.output, config.storage)
    files_before = len(committed_files(OutputLayout(fs, root)))
    report = run_labeling(config, smoke=True, log=log)
    Path(config_path).with_suffix(".json").write_text(json.dumps({
        "seconds_until_labelling": round(marks.get("resume", float("nan")), 2),
        "seconds_total": round(time.time() - started, 2),
        "committed_files_read": files_before,
        "files_after": len(committed_files(OutputLayout(fs, root))),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "skipped_already_committed": report["rows"]["skipped_already_committed"],
        "labelled_this_run": report["rows"]["labelled_this_run"],
        "labelled_total": report["rows"]["labelled_total"],
    }))


def former_design(folder: Path) -> dict[str, Any]:
    """The former resume path on the former layout: serial reads, one string array, one is_in table."""
    script = f"""
import json, resource, time, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from pathlib import Path
started = time.time()
files = sorted(Path({str(folder / 'data')!r}).glob('*.parquet'))
arrays = [pq.read_table(f, columns=['id']).column('id') for f in files]
committed = pa.chunked_array([c for a in arrays for c in a.chunks], pa.string()).combine_chunks()
read = time.time() - started
t = time.time()
pc.is_in(pa.array(['x'] * 4096), value_set=committed)
print(json.dumps({{"files": len(files), "seconds_read_ids": round(read, 2),
                  "seconds_one_is_in_call": round(time.time() - t, 3),
                  "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(workdir: Path, committed: int, left: int, base: dict[str, Any], former: bool) -> dict[str, Any]:
    config = config_from_dict(base)
    case = workdir / f"n{committed}"
    output = case / "labels"
    started = time.time()
    files = write_committed(output, committed, config.teacher.commit_rows, config)
    write_corpus(case / "corpus", committed, left)
    raw = to_dict(config)
    raw["data"].update(input=str(case / "corpus"), output=str(output))
    config_path = case / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    # The manifest a first run would have written, so the job resumes rather than refuses.
    from pipeline.labeling import _manifest

    (output / "manifest.json").write_text(json.dumps(_manifest(config_from_dict(raw)), indent=2))
    print(f"[bench] {committed} committed rows in {files} files, {left} left: written in "
          f"{time.time() - started:.0f}s", flush=True)
    subprocess.run([sys.executable, __file__, "--child", str(config_path)], check=True, stdout=sys.stderr)
    figures = {"committed": committed, "left": left, "committed_files": files,
               **json.loads(config_path.with_suffix(".json").read_text())}
    if former:
        old = case / "former"
        write_committed(old, committed, OLD_SHARD_ROWS, config)
        figures["former_design"] = former_design(old)
        shutil.rmtree(old)
    shutil.rmtree(case)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--left", type=int, default=2000, help="new rows in the corpus, labelled by the run")
    parser.add_argument("--config", default="examples/banking_support.yaml")
    parser.add_argument("--no-former", action="store_true", help="skip the former design's arm")
    parser.add_argument("--fresh", type=int, metavar="ROWS", help="label ROWS new rows end to end instead")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from pipeline.cli import smoke_config
    from pipeline.config import load_config

    with tempfile.TemporaryDirectory(prefix="label_scale-", dir=os.environ.get("BENCH_TMP")) as tmp:
        workdir = Path(tmp)
        config = smoke_config(load_config(args.config), root=workdir / "smoke")
        base = to_dict(config)
        base["teacher"].update(samples=2, max_tokens=4)  # short answers: the labelling is not the point
        if args.fresh:
            result = run_size(workdir, 0, args.fresh, base, former=False)
            rate = result["labelled_this_run"] / result["seconds_total"]
            print(f"\n{result['labelled_this_run']} rows labelled end to end in {result['seconds_total']}s: "
                  f"{rate:.1f} rows/s; {result['files_after']} files; driver peak RSS "
                  f"{result['driver_peak_rss_mb']} MB")
            if args.json:
                args.json.write_text(json.dumps({**result, "rows_per_second": round(rate, 1)}, indent=2))
            return
        results = []
        for i, size in enumerate(sorted(args.sizes)):
            results.append(run_size(workdir, size, args.left, base, former=(i == 0 and not args.no_former)))
            print(json.dumps(results[-1]), flush=True)

    print(f"\n{'committed rows':>15}{'files':>8}{'s to labelling':>16}{'s total':>10}{'driver MB':>11}")
    for r in results:
        print(f"{r['committed']:>15}{r['committed_files']:>8}{r['seconds_until_labelling']:>16}"
              f"{r['seconds_total']:>10}{r['driver_peak_rss_mb']:>11}")
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"growth {a['committed']} -> {b['committed']} rows ({b['committed'] / a['committed']:.0f}x): "
              f"time to labelling {b['seconds_until_labelling'] / a['seconds_until_labelling']:.2f}x, "
              f"driver RSS {b['driver_peak_rss_mb'] / a['driver_peak_rss_mb']:.2f}x")
    former = results[0].get("former_design")
    if former:
        print(f"former design at {results[0]['committed']} rows ({former['files']} files of {OLD_SHARD_ROWS}): "
              f"{former['seconds_read_ids']}s to read the ids serially, {former['seconds_one_is_in_call']}s per "
              f"is_in call (once per block), driver {former['driver_peak_rss_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
