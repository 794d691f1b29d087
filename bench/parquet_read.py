"""Ray Data's two Parquet readers side by side: DataSourceV2 (Ray 2.60's default) and V1.

Every job of raydistill reads Parquet through Ray Data (labels into training,
the relabel inputs, predictions). Ray 2.60's DataSourceV2 starts a pool of
footer-reading actors (``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS``, 32) for every
``read_parquet``; ``pipeline.cluster.init_ray`` switches to the V1 reader
unless ``RAY_DATA_USE_DATASOURCE_V2`` is set. This measures why, on one local
Ray cluster: for each input (a file of 120 rows as the rounds' steps read, and
``--files`` files of ``--rows`` rows each), read the ``id`` column and
materialise it, alternating the readers ``--repeats`` times. Rows are synthetic.

    .venv/bin/python bench/parquet_read.py [--files 1000] [--rows 1000] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_files(folder: Path, files: int, rows: int) -> list[str]:
    folder.mkdir(parents=True)
    for i in range(files):
        table = pa.table({"id": [f"{i}-{j}" for j in range(rows)], "text": ["profit rose in the quarter"] * rows})
        pq.write_table(table, folder / f"part-{i:05d}.parquet")
    return sorted(str(p) for p in folder.glob("*.parquet"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import ray
    import ray.data
    from ray.data import DataContext

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    context = DataContext.get_current()
    context.enable_progress_bars = context.enable_operator_progress_bars = False
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [("1 file x 120 rows", write_files(Path(tmp) / "small", 1, 120), 120),
                  (f"{args.files} files x {args.rows} rows", write_files(Path(tmp) / "many", args.files, args.rows),
                   args.files * args.rows)]
        for name, files, expected in inputs:
            seconds: dict[str, list[float]] = {"V2": [], "V1": []}
            for _ in range(args.repeats):
                for reader in ("V2", "V1"):
                    context.use_datasource_v2 = reader == "V2"
                    started = time.perf_counter()
                    rows = ray.data.read_parquet(files).select_columns(["id"]).materialize().count()
                    seconds[reader].append(time.perf_counter() - started)
                    if rows != expected:
                        raise SystemExit(f"{reader} read {rows} rows of {name}, not {expected}")
            row = {"input": name, **{f"{r}_seconds": [round(s, 2) for s in v] for r, v in seconds.items()}}
            # The first read of each reader pays its workers' start-up; the median is the figure.
            v2, v1 = statistics.median(seconds["V2"]), statistics.median(seconds["V1"])
            row.update(V2_median=round(v2, 2), V1_median=round(v1, 2), V2_over_V1=round(v2 / v1, 1))
            results.append(row)
            print(f"{name:26s} V2 {v2:6.2f} s  V1 {v1:6.2f} s  V2/V1 {v2 / v1:5.1f}x   "
                  f"(each try: V2 {row['V2_seconds']}, V1 {row['V1_seconds']})", flush=True)
    ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps({"num_cpus": args.num_cpus, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
