"""End-of-job reports: what was done, at what cost, with what result."""

from __future__ import annotations

import collections
from typing import Any

import pyarrow.compute as pc

from pipeline import prompts, storage, tasks
from pipeline.config import ABSTAIN, Config, TaskConfig
from pipeline.smoke import SMOKE_WARNING

HISTOGRAM_EDGES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def consistency_bin(value: float) -> str:
    """Histogram bin of a consistency value; unanimous rows get their own bin."""
    if value >= 1.0:
        return "1.0"
    for low, high in zip(HISTOGRAM_EDGES, HISTOGRAM_EDGES[1:]):
        if value < high:
            return f"[{low:.1f},{high:.1f})"
    return "1.0"


_SUMMARY_COLUMNS = ["consistency", "n_valid", "votes", "truncated", "prompt_tokens", "completion_tokens"]


def _labelled_files_summary(fs: Any, files: list[str], task: TaskConfig) -> dict[str, collections.Counter]:
    """Counts over a group of committed files (one task's share; summed on the driver)."""
    import pyarrow.parquet as pq

    kind = tasks.get(task)
    columns = _SUMMARY_COLUMNS + [field.name for field in kind.label_fields()]
    summary: dict[str, collections.Counter] = {
        "totals": collections.Counter(), "labels": collections.Counter(), "histogram": collections.Counter(),
        "answers": collections.Counter()}
    for file in files:  # one file at a time: a task's memory stays at one file's columns
        table = pq.read_table(file, filesystem=fs, columns=columns)
        flat_votes = pc.list_flatten(table.column("votes"))
        summary["totals"].update({
            "rows": table.num_rows,
            "abstained_rows": pc.sum(pc.equal(table.column("n_valid"), 0)).as_py() or 0,
            "votes": len(flat_votes),
            "abstained_votes": pc.sum(pc.equal(flat_votes, ABSTAIN)).as_py() or 0,
            "truncated_rows": pc.sum(table.column("truncated")).as_py() or 0,
            "prompt_tokens": pc.sum(table.column("prompt_tokens")).as_py() or 0,
            "completion_tokens": pc.sum(table.column("completion_tokens")).as_py() or 0,
            "consistency_sum": pc.sum(table.column("consistency")).as_py() or 0.0,
        })
        summary["labels"].update(kind.label_counts(table))
        summary["answers"].update(kind.answer_counts(table))
        summary["histogram"].update(consistency_bin(v) for v in table.column("consistency").to_pylist())
    return summary


def summarize_labelled(out: Any, task: TaskConfig) -> dict[str, Any]:
    """Counts over every committed labelled row: Ray tasks read the files in parallel and
    summarise them; the driver adds up one small summary per task."""
    import ray

    from pipeline.cluster import map_files

    totals: collections.Counter[str] = collections.Counter()
    labels: collections.Counter[str] = collections.Counter()
    histogram: collections.Counter[str] = collections.Counter()
    answers: collections.Counter[str] = collections.Counter()
    files = storage.list_files(out.fs, out.data, (".parquet",))
    for part in ray.get(map_files(out.fs, files, _labelled_files_summary, task)):
        totals.update(part["totals"])
        labels.update(part["labels"])
        histogram.update(part["histogram"])
        answers.update(part["answers"])
    order = [f"[{lo:.1f},{hi:.1f})" for lo, hi in zip(HISTOGRAM_EDGES, HISTOGRAM_EDGES[1:])] + ["1.0"]
    keys = ["rows", "abstained_rows", "votes", "abstained_votes", "truncated_rows", "prompt_tokens",
            "completion_tokens"]
    return {
        **{key: int(totals.get(key, 0)) for key in keys},
        "label_distribution": dict(labels),
        "consistency_histogram": {b: histogram.get(b, 0) for b in order},
        "mean_consistency": round(totals.get("consistency_sum", 0.0) / totals["rows"], 4) if totals.get("rows") else None,
        "answers_left_out": dict(answers),
    }


def labeling_report(
    out: Any,
    config: Config,
    *,
    input_rows: int,
    quarantine: dict[str, int],
    already_done: int,
    run: dict[str, Any],
    duplicates_removed: int,
    failed_total: int,
    wall_seconds: float,
    smoke: bool,
) -> dict[str, Any]:
    total = summarize_labelled(out, config.task)
    labelling_seconds = run.get("wall_seconds", 0.0)
    # Engine time per actor, start-up excluded: the summed time actors spent in
    # their batches, spread over the actors that ran in parallel.
    busy_seconds = run["seconds"] / config.teacher.num_actors
    tokens = run["prompt_tokens"] + run["completion_tokens"]
    label_distribution = {name: total["label_distribution"].get(name, 0) for name in config.task.label_names}
    return {
        "job": "label",
        "task": config.task.name,
        "teacher_model": config.teacher.model,
        "prompt_hash": prompts.prompt_hash(config.task),
        "samples_per_text": config.teacher.samples,
        "input": config.data.input,
        "output": config.data.output,
        "smoke": smoke,
        **({"warning": SMOKE_WARNING} if smoke else {}),
        "rows": {
            "input": input_rows,
            "quarantined": sum(quarantine.values()),
            "quarantine_reasons": quarantine,
            "skipped_already_committed": already_done,
            "labelled_this_run": run["rows"],
            "labelled_total": total["rows"],
            "abstained": total["abstained_rows"],
            "truncated": total["truncated_rows"],
            "duplicates_removed": duplicates_removed,
            "failed_this_run": run.get("failed", 0),
            "failed_total": failed_total,
        },
        **({"per_row_demos": {"column": config.data.demos_column,
                              "demos_dropped_to_fit_this_run": run.get("demos_dropped", 0)}}
           if config.data.demos_column else {}),
        "votes": {"total": total["votes"], "abstained": total["abstained_votes"]},
        "label_distribution": label_distribution,
        **({"task_type": config.task.type} if config.task.type != "classification" else {}),
        **({"answers_left_out": total["answers_left_out"]} if total["answers_left_out"] else {}),
        "consistency_histogram": total["consistency_histogram"],
        "mean_consistency": total["mean_consistency"],
        "tokens": {
            "prompt_this_run": run["prompt_tokens"],
            "completion_this_run": run["completion_tokens"],
            "prompt_total": total["prompt_tokens"],
            "completion_total": total["completion_tokens"],
        },
        "time": {
            "wall_seconds": round(wall_seconds, 2),
            "labelling_seconds": round(labelling_seconds, 2),
            "rows_per_second": _rate(run["rows"], labelling_seconds, 3),
            "tokens_per_second": _rate(tokens, labelling_seconds),
            "completion_tokens_per_second": _rate(run["completion_tokens"], labelling_seconds),
            "busy_seconds": round(busy_seconds, 2),
            "rows_per_second_excluding_start_up": _rate(run["rows"], busy_seconds, 3),
            "completion_tokens_per_second_excluding_start_up": _rate(run["completion_tokens"], busy_seconds),
        },
    }


def _rate(amount: float, seconds: float, digits: int = 1) -> float:
    return round(amount / seconds, digits) if seconds > 0 else 0.0


def format_labeling_report(report: dict[str, Any]) -> str:
    rows, time_, tokens = report["rows"], report["time"], report["tokens"]
    lines = []
    if report.get("smoke"):
        lines.append(f"!! {report['warning']}")
    lines += [
        f"labelling report: {report['task']} with {report['teacher_model']} (k={report['samples_per_text']})",
        f"  rows        input {rows['input']}, labelled {rows['labelled_this_run']} this run "
        f"({rows['labelled_total']} in output), skipped {rows['skipped_already_committed']} already committed",
        f"  quarantined {rows['quarantined']} {rows['quarantine_reasons'] or ''}".rstrip(),
        f"  failed      {rows['failed_total']} rows the teacher could not label ({rows['failed_this_run']} this run)"
        + (": failed/ holds them with the error; a rerun skips them until it is deleted"
           if rows["failed_total"] else ""),
        f"  abstained   {rows['abstained']} rows (no valid vote); "
        f"{report['votes']['abstained']}/{report['votes']['total']} votes",
        f"  truncated   {rows['truncated']} texts cut to fit the context",
        f"  tokens      prompt {tokens['prompt_this_run']}, completion {tokens['completion_this_run']} (this run)",
        f"  time        {time_['wall_seconds']}s wall, {time_['labelling_seconds']}s labelling: "
        f"{time_['rows_per_second']} rows/s, {time_['completion_tokens_per_second']} completion tokens/s; "
        f"excluding engine start-up {time_['rows_per_second_excluding_start_up']} rows/s, "
        f"{time_['completion_tokens_per_second_excluding_start_up']} completion tokens/s",
        "  labels      " + ", ".join(f"{k}: {v}" for k, v in report["label_distribution"].items()),
        *(["  left out    " + ", ".join(f"{k}: {v}" for k, v in report["answers_left_out"].items())]
          if report.get("answers_left_out") else []),
        "  consistency " + ", ".join(f"{k}: {v}" for k, v in report["consistency_histogram"].items()),
    ]
    if "per_row_demos" in report:
        lines.append(f"  demos       per row ({report['per_row_demos']['column']}); "
                     f"{report['per_row_demos']['demos_dropped_to_fit_this_run']} left out to fit the context")
    return "\n".join(lines)
