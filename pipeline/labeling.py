"""The labelling job: corpus -> Ray Data -> vLLM teacher actors -> labelled parquet.

Output layout under ``data.output`` (local or s3://)::

    manifest.json          labels, prompt hash, teacher and sampling settings
    data/part-*.parquet    labelled rows (schemas.LABELLED), ``teacher.commit_rows`` rows a file
    quarantine/*.parquet   input rows that cannot be labelled (bad id, text, ...), with the reason
    failed/part-*.parquet  rows the teacher could not label (the engine rejected them, or they killed
                           it), with the error (schemas.FAILED); a rerun skips them, and deleting
                           the folder makes the next run try them again
    attempts/*.json        batches begun and not yet committed (see teacher.plan_run)
    report.json            the run's report

Exactly once (:mod:`pipeline.committed`): files named by their ids, committed
ids skipped by a rerun. A crash loses at most the batches in flight:
``teacher.max_concurrent_batches`` x ``teacher.commit_rows`` rows of work per
actor. Nothing proportional to the corpus reaches the driver: it holds object
refs, counts and the (small) list of duplicated input ids.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import pyarrow as pa

from pipeline import idindex, prompts, reports, storage
from pipeline.cluster import init_ray
from pipeline.progress import Progress
from pipeline.committed import (OutputLayout, committed_index, failed_files, pending, remove_duplicate_ids, scan,
                                 write_quarantine)
from pipeline.config import Config, ConfigError
from pipeline.corpus import open_corpus, read_corpus
from pipeline.faults import injected_faults
from pipeline.teacher import PromptRenderer, TeacherLabeler, labeling_pool_options

def run_labeling(config: Config, *, smoke: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Label the corpus of ``config.data.input`` into ``config.data.output``.

    Returns the report (also written to ``report.json`` beside the output).
    """
    started = time.time()
    fs, root = storage.resolve(config.data.output, config.storage)
    out = OutputLayout(fs, root)

    # Everything that can be wrong with the input or config fails here,
    # before any engine is started.
    corpus = open_corpus(config.data, config.storage)
    _check_prompt_fits(config)
    manifest = _manifest(config)
    storage.claim_output(out.fs, out.manifest, manifest, config.data.output, "data.output")
    log(f"[label] {len(corpus.files)} {corpus.format} file(s) from {config.data.input}")
    with storage.OutputLease(out.fs, out.root, config.data.output, "data.output", "labelling job"):
        return _label_into(out, corpus, config, started, smoke, log)


def _label_into(out: OutputLayout, corpus: Any, config: Config, started: float, smoke: bool,
                log: Callable[[str], None]) -> dict[str, Any]:
    init_ray()
    rows = read_corpus(corpus, config.task.label_names)
    skip = tuple(OutputLayout(*storage.resolve(uri, config.storage)) for uri in config.data.skip_labelled)
    committed_ref, _ = committed_index(out, skip)
    counts, duplicates = scan(rows, committed_ref)
    log(
        f"[label] {counts['input']} rows: {counts['valid']} to label, {counts['quarantined']} quarantined, "
        f"{counts['already_done']} already committed"
        + (f" (here or in the {len(skip)} output(s) of data.skip_labelled)" if skip else "")
        + f", {counts['todo']} left"
    )

    write_quarantine(rows, duplicates, out, expected=counts["quarantined"])
    run_stats = _label(rows, duplicates, committed_ref, config, out, counts["todo"], log)
    del committed_ref  # the object store may free it

    removed, _ = remove_duplicate_ids(out)
    failed_total = idindex.summarize_files(out.fs, failed_files(out))["rows"]
    report = reports.labeling_report(
        out,
        config,
        input_rows=counts["input"],
        quarantine=counts["problems"],
        already_done=counts["already_done"],
        run=run_stats,
        duplicates_removed=removed,
        failed_total=failed_total,
        wall_seconds=time.time() - started,
        smoke=smoke,
    )
    storage.write_json(out.fs, out.report, report)
    return report


def _check_prompt_fits(config: Config) -> None:
    """Load the teacher's tokenizer (not its weights) and check the prompt budget."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.teacher.model)
    except OSError as err:
        raise ConfigError(f"teacher.model: cannot load tokenizer of {config.teacher.model!r}: {err}") from err
    PromptRenderer(tokenizer, config.task, config.teacher.max_model_len, config.teacher.max_tokens)


def _manifest(config: Config) -> dict[str, Any]:
    teacher = config.teacher
    return {
        "task": config.task.name,
        "labels": config.task.label_names,
        # Named for the new types only, so that a classification output made before types resumes.
        **({"task_type": config.task.type} if config.task.type != "classification" else {}),
        **({"min_votes": config.task.min_votes} if config.task.type == "spans" else {}),
        **({"label_threshold": config.task.label_threshold} if config.task.type == "multilabel" else {}),
        "prompt_hash": prompts.prompt_hash(config.task),
        "teacher_model": teacher.model,
        "sampling": {
            "samples": teacher.samples,
            "temperature": teacher.temperature,
            "top_p": teacher.top_p,
            "max_tokens": teacher.max_tokens,
            "seed": teacher.seed,
        },
        "input": config.data.input,
    }


class _Board:
    """Rows and completion tokens the teacher actors have finished (committed or not yet)."""

    def __init__(self) -> None:
        self.rows = self.tokens = 0

    def add(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens

    def read(self) -> tuple[int, int]:
        return self.rows, self.tokens


def _label(
    rows: Any,
    duplicates: pa.Array,
    committed_ref: Optional[Any],
    config: Config,
    out: OutputLayout,
    todo: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Stream the rows still to label through the teacher actors; show progress.

    The pending rows are regrouped into blocks of ``teacher.commit_rows``
    (Ray Data's streaming repartition) so that each actor batch, and each
    committed file, holds that many rows whatever the input's block sizes.
    """
    import ray

    stats = {"rows": 0, "failed": 0, "abstentions": 0, "prompt_tokens": 0, "completion_tokens": 0,
             "demos_dropped": 0, "seconds": 0.0}
    if todo == 0:
        return stats
    teacher = config.teacher
    # Markers of batches an earlier job left unfinished: this job forms its batches anew.
    storage.delete_dir(out.fs, out.attempts)
    board = ray.remote(num_cpus=0)(_Board).remote()
    to_label = rows.map_batches(
        pending, batch_format="pyarrow", fn_kwargs={"duplicates": duplicates, "committed_ref": committed_ref}
    ).repartition(target_num_rows_per_block=teacher.commit_rows, strict=True)
    summaries = to_label.map_batches(
        TeacherLabeler,
        fn_constructor_kwargs={"config": config, "data_fs": out.fs, "data_path": out.data, "progress": board,
                               "failed_path": out.failed, "attempts_path": out.attempts,
                               "faults": injected_faults()},
        **labeling_pool_options(teacher),
    )
    progress = Progress(todo, log)
    watcher = _ProgressWatcher(board, progress)
    try:
        for batch in summaries.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                for key in stats:
                    stats[key] += row[key]
                progress.committed += row["rows"] + row["failed"]
    finally:
        watcher.stop()
    progress.finish()
    stats["wall_seconds"] = progress.elapsed()
    return stats


class _ProgressWatcher:
    """Polls the actors' progress board from a driver thread and feeds :class:`Progress`."""

    def __init__(self, board: Any, progress: "Progress", every: float = 1.0):
        self.board, self.progress, self.every = board, progress, every
        self.seen = (0, 0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="label-progress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self._poll()

    def _poll(self) -> None:
        import ray

        rows, tokens = ray.get(self.board.read.remote())
        if rows > self.seen[0]:
            self.progress.update(rows - self.seen[0], tokens - self.seen[1])
            self.seen = (rows, tokens)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        try:
            self._poll()  # the last rows the actors sent
        except Exception:  # noqa: BLE001 - progress must not hide the job's own outcome
            pass
