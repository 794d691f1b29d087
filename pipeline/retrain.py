"""Periodic retraining: ``raydistill retrain CONFIG``, one run per new data, safe to start on a schedule.

A run, under ``retrain.root`` (local or s3://)::

    labels/<partition>/   the teacher's labels of one partition of ``retrain.input`` (a labelling
                          output: exactly once, resumable); ids labelled in an earlier partition are
                          skipped (``data.skip_labelled``), so a text is labelled once
    runs/<run>/distill/   the candidate student's distillation (resumable), trained on the labels of
                          every partition so far or of the newest ``retrain.window``
    runs/<run>/production_evaluation/   the production model on the same gold set
    runs/<run>/drift.json, drift.png    :mod:`pipeline.drift`
    runs/<run>/run.json   the run's record, promoted or not
    models/               the registry (:mod:`pipeline.registry`): the candidate becomes the next version
    state.json            the partitions done and by which run: a run finds its work here

The steps: list the partitions (sub-folders of ``retrain.input``, e.g. ``dt=2026-11-25/``) not done
yet; label each; train a candidate; evaluate it and production on ``distill.<retrain.gate_set>``;
register the candidate; promote it when :func:`gate` says so; write the drift report, the run's record
and ``state.json`` last. A run killed part way and started again redoes nothing committed (labels,
checkpoints) and finishes the same partitions; a run with no partition left to do says so and writes
nothing. One run at a time holds the root (a lease, as every output folder of the jobs).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow.fs as pafs

from pipeline import drift, model_store, prompts, storage, tasks
from pipeline.config import Config, ConfigError, RetrainConfig, to_dict
from pipeline.registry import Registry, iso_time

STATE = "state.json"


def list_partitions(fs: Any, path: str, uri: str) -> list[str]:
    """The sub-folders of ``retrain.input`` that hold files, sorted by name (dates sort as dates)."""
    entries = storage.retried(fs, lambda: fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)),
                              f"listing {uri}")
    folders = sorted(e.base_name for e in entries
                     if e.type == pafs.FileType.Directory and e.base_name[:1] not in "_.")
    if not folders and any(e.type == pafs.FileType.File for e in entries):
        raise ConfigError(f"retrain.input: {uri} holds files but no partition folders; put each period's texts "
                          "in a folder of its own (e.g. dt=2026-11-25/) under it")
    return [name for name in folders if storage.list_files(fs, storage.join(path, name))]


def gate(candidate: dict[str, Any], production: Optional[dict[str, Any]], kind: Any,
         retrain: RetrainConfig, production_labels: Optional[list[str]] = None) -> dict[str, Any]:
    """Whether the candidate replaces production, from their evaluation reports on the same gold set.

    Promoted when there is no production model yet, or when ``candidate[metric] - production[metric] >
    min_improvement`` and (guard ``class_recall``) no class's recall fell by more than ``max_guard_drop``.
    Never when production predicts another label set (``production_labels``): a person compares those.
    """
    metric = retrain.metric
    if metric not in candidate["headline"]:
        raise ConfigError(f"retrain.metric: {metric!r} is not a metric of this task's evaluation "
                          f"(one of {', '.join(candidate['headline'])})")
    result: dict[str, Any] = {"set": retrain.gate_set, "metric": metric, "candidate": candidate["headline"][metric],
                              "min_improvement": retrain.min_improvement, "guard": retrain.guard}
    if production_labels is not None and production_labels != kind.label_names:
        return {**result, "production": None, "promote": False,
                "reasons": [f"production predicts other labels ({', '.join(production_labels)}); compare the two "
                            "by hand and promote with `raydistill models promote`"]}
    if production is None:
        return {**result, "production": None, "promote": True, "reasons": ["no production model yet"]}
    delta = candidate["headline"][metric] - production["headline"][metric]
    result.update(production=production["headline"][metric], improvement=round(delta, 6))
    reasons, promote = [], True
    if delta > retrain.min_improvement:
        reasons.append(f"{metric} {candidate['headline'][metric]:.4f} beats production's "
                       f"{production['headline'][metric]:.4f} by {delta:+.4f} (> {retrain.min_improvement})")
    else:
        promote = False
        reasons.append(f"{metric} {candidate['headline'][metric]:.4f} against production's "
                       f"{production['headline'][metric]:.4f}: {delta:+.4f}, not more than {retrain.min_improvement}")
    if retrain.guard == "class_recall":
        before, after = kind.class_recalls(production), kind.class_recalls(candidate)
        drops = {name: round(before[name] - after.get(name, 0.0), 6) for name in before}
        result["recall_drops"] = drops
        worst = [name for name, drop in drops.items() if drop > retrain.max_guard_drop]
        if worst:
            promote = False
            reasons.append("recall fell by more than " f"{retrain.max_guard_drop} for "
                           + ", ".join(f"{name} ({before[name]:.3f} -> {after.get(name, 0.0):.3f})" for name in worst))
    return {**result, "promote": promote, "reasons": reasons}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a retraining root keeps things (see the module's docstring)."""

    fs: Any
    root: str
    uri: str

    def labels_uri(self, partition: str) -> str:
        return f"{self.uri.rstrip('/')}/labels/{partition}"

    def run_uri(self, run: str) -> str:
        return f"{self.uri.rstrip('/')}/runs/{run}"

    def run_path(self, run: str) -> str:
        return storage.join(self.root, "runs", run)

    @property
    def state(self) -> str:
        return storage.join(self.root, STATE)

    def read_state(self) -> dict[str, Any]:
        return storage.read_json(self.fs, self.state) if storage.exists(self.fs, self.state) else \
            {"partitions": {}, "runs": []}

    def label_report(self, partition: str) -> Optional[dict[str, Any]]:
        """The labelling report of a partition; None until its labelling has ended once."""
        path = storage.join(self.root, "labels", partition, "report.json")
        return storage.read_json(self.fs, path) if storage.exists(self.fs, path) else None


def run_retrain(config: Config, *, period: Optional[str] = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One retraining run over the partitions not done yet (or ``period`` alone); returns its record."""
    if config.retrain is None or config.distill is None or config.student is None:
        raise ConfigError("retrain: this job needs the retrain, distill and student sections of the config")
    retrain = config.retrain
    fs, root = storage.resolve(retrain.root, config.storage)
    layout = Layout(fs, root, retrain.root)
    in_fs, in_root = storage.resolve(retrain.input, config.storage)
    partitions = list_partitions(in_fs, in_root, retrain.input)
    if period is not None and period not in partitions:
        raise ConfigError(f"--period: {period!r} is not a partition of {retrain.input} "
                          f"(partitions: {', '.join(partitions[-5:]) or 'none'}{' ...' if len(partitions) > 5 else ''})")
    todo = _todo(layout.read_state(), partitions, period, log)
    if not todo:
        return {"job": "retrain", "status": "nothing to do", "partitions": partitions}
    with storage.OutputLease(fs, root, retrain.root, "retrain.root", "retraining job"):
        todo = _todo(layout.read_state(), partitions, period, log)  # a run that held the lease may have done them
        if not todo:
            return {"job": "retrain", "status": "nothing to do", "partitions": partitions}
        return _run(config, layout, partitions, todo, log)


def _todo(state: dict[str, Any], partitions: list[str], period: Optional[str], log: Callable[[str], None]) -> list[str]:
    done = state["partitions"]
    wanted = [period] if period else partitions
    todo = [p for p in wanted if p not in done]
    for p in wanted:
        if p in done:
            run = next((r for r in reversed(state["runs"]) if r["run"] == done[p]), {})
            if period:
                log(f"[retrain] partition {p} was done by run {done[p]} (version {run.get('version') or 'none'}, "
                    f"{'promoted' if run.get('promoted') else 'not promoted'}); nothing to do")
    if not todo and not period:
        log(f"[retrain] no new partition under the input ({len(partitions)} partition(s), all done, the newest "
            f"{partitions[-1] if partitions else '-'}); nothing to do")
    return todo


def _run(config: Config, layout: Layout, partitions: list[str], todo: list[str],
         log: Callable[[str], None]) -> dict[str, Any]:
    from pipeline.cluster import init_ray
    from pipeline.labeling import run_labeling

    started = time.time()
    retrain, kind = config.retrain, tasks.for_config(config)
    run = todo[-1]
    log(f"[retrain] run {run}: {len(todo)} new partition(s): {', '.join(todo)}")
    init_ray()

    # Each partition's labelling report, read once: whether it is labelled, its rows (none: nothing to
    # train on), the drift report's figures and the registry's record of the label data.
    label_reports = {p: report for p in partitions if p <= run and (report := layout.label_report(p)) is not None}
    labelling = {}
    for partition in todo:
        before = [p for p in label_reports if p < partition]
        label_config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, input=f"{retrain.input.rstrip('/')}/{partition}", output=layout.labels_uri(partition),
            skip_labelled=[layout.labels_uri(p) for p in before]))
        log(f"[retrain] labelling {partition} (ids labelled in {len(before)} earlier partition(s) skipped)")
        report = label_reports[partition] = run_labeling(label_config, log=log)
        labelling[partition] = {
            **{key: report["rows"][key] for key in ("input", "labelled_total", "labelled_this_run",
                                                    "skipped_already_committed", "quarantined", "abstained",
                                                    "failed_total")},
            "tokens_this_run": report["tokens"]["prompt_this_run"] + report["tokens"]["completion_this_run"],
            "labelling_seconds": report["time"]["labelling_seconds"],
            "rows_per_second": report["time"]["rows_per_second"],
            "label_distribution": report["label_distribution"],
        }
    new_rows = sum(labelling[p]["labelled_total"] for p in todo)

    with_rows = [p for p in sorted(label_reports) if label_reports[p]["rows"]["labelled_total"]]
    trained = list(with_rows)
    if retrain.window:
        trained = trained[-retrain.window:]
    record: dict[str, Any] = {"job": "retrain", "run": run, "partitions": todo, "labelling": labelling,
                              "trained_on": trained, "started_at": iso_time(started)}
    registry = Registry.open(retrain.root, config.storage)
    if new_rows == 0 or not trained:
        log(f"[retrain] no new labelled rows in {', '.join(todo)}: no candidate trained")
        record.update(status="no new rows", version=None, promoted=False)
        return _finish(layout, record, todo, started, log)

    candidate, distill_report = _train_candidate(config, layout, run, trained, log)
    registered = registry.version_of_run(run)  # by this run, before a crash that came before state.json
    if registered:  # this run registered (and maybe promoted) its candidate before a crash: decided then
        decision = registry.info(registered)["gate"]
        production_version = decision["production_version"]
    else:
        production_version = registry.production()
        production_labels = registry.info(production_version)["labels"] if production_version else None
        production_reports = None
        if production_labels is not None and production_labels != config.task.label_names:
            log(f"[retrain] production {production_version} predicts other labels than the config's: not compared")
        else:
            production_reports = _evaluate_production(config, registry, production_version, layout, run, log)
        decision = gate(candidate, (production_reports or {}).get(retrain.gate_set), kind, retrain,
                        production_labels)
        decision["production_version"] = production_version
        decision["production_metrics"] = {name: r["headline"] for name, r in (production_reports or {}).items()}
    log("[retrain] " + ("promote: " if decision["promote"] else "keep production: ") + "; ".join(decision["reasons"]))

    agreement_sources = [layout.labels_uri(p) for p in todo if p in with_rows]
    use_gpu = config.distill.use_gpu
    agreement = {"candidate": drift.student_agreement(f"{layout.run_uri(run)}/distill/model", agreement_sources,
                                                      kind, config.storage, retrain.agreement_rows, use_gpu)}
    if decision["production_metrics"]:
        agreement["production"] = drift.student_agreement(registry.model_uri(production_version), agreement_sources,
                                                          kind, config.storage, retrain.agreement_rows, use_gpu)
    summaries = {p: drift.partition_summary(p, report) for p, report in sorted(label_reports.items())}
    drift_report = drift.drift_report(config.task.label_names, [summaries[p] for p in todo],
                                      [s for p, s in summaries.items() if p not in todo], agreement)
    storage.write_json(layout.fs, storage.join(layout.run_path(run), "drift.json"), drift_report)
    storage.write_bytes_atomic(layout.fs, storage.join(layout.run_path(run), "drift.png"), drift.drift_png(drift_report))

    version = registered or _register(config, registry, layout, run, trained, label_reports, distill_report, decision)
    if decision["promote"] and registry.production() != version:
        registry.promote(version, reason=f"run {run}: " + "; ".join(decision["reasons"]))
    log(f"[retrain] registered {version}" + (" and promoted it to production" if decision["promote"]
                                             else f"; production stays {production_version}"))
    record.update(status="done", version=version, promoted=decision["promote"], gate=decision,
                  production_before=production_version, production=registry.production(),
                  candidate_metrics=distill_report["evaluation"], new_rows=new_rows,
                  drift={"label_distribution": {k: drift_report["label_distribution"][k]
                                                for k in ("total_variation", "psi", "psi_alert", "largest_change")},
                         "student_teacher_agreement": agreement,
                         "json": f"{layout.run_uri(run)}/drift.json", "png": f"{layout.run_uri(run)}/drift.png"})
    return _finish(layout, record, todo, started, log)


def _train_candidate(config: Config, layout: Layout, run: str, trained: list[str],
                     log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Distil on the labels of ``trained``; the candidate's evaluation report on the gate set and the
    distillation report."""
    from pipeline.distill import run_distill

    label_uris = [layout.labels_uri(p) for p in trained]
    distill = dataclasses.replace(config.distill, labels=label_uris[0], extra_labels=label_uris[1:],
                                  output=f"{layout.run_uri(run)}/distill")
    log(f"[retrain] training the candidate on {len(trained)} partition(s): {', '.join(trained)}")
    report = run_distill(dataclasses.replace(config, distill=distill), log=log)
    path = storage.join(layout.run_path(run), "distill", "evaluation", f"{config.retrain.gate_set}.json")
    return storage.read_json(layout.fs, path), report


def _evaluate_production(config: Config, registry: Registry, version: Optional[str], layout: Layout, run: str,
                         log: Callable[[str], None]) -> Optional[dict[str, dict[str, Any]]]:
    """The production model's evaluation on the gold sets the candidate was evaluated on, by set name
    (None before the first promotion)."""
    if version is None:
        log("[retrain] no production model yet: the candidate will be the first")
        return None
    from pipeline.evaluate import evaluate, load_task_gold, write_evaluation

    kind = tasks.for_config(config)
    kind.target_precision = config.distill.target_precision
    reports = {}
    with tempfile.TemporaryDirectory(prefix="raydistill-production-") as tmp:
        local = model_store.fetch(registry.model_uri(version), config.storage, tmp)
        meta = storage.read_json(pafs.LocalFileSystem(), str(local / model_store.META))
        tokenizer, model = kind.load_student(str(local))
        for name in ("validation", "test"):
            uri = getattr(config.distill, name)
            if not uri:
                continue
            texts, targets = load_task_gold(uri, kind, f"distill.{name}", config.storage)
            report, predictions = evaluate(kind, model, tokenizer, texts, targets, meta["max_length"])
            write_evaluation(layout.fs, storage.join(layout.run_path(run), "production_evaluation"), name, report,
                             kind.evaluation_rows(texts, targets, predictions), kind.plots(report))
            log(f"[retrain] production {version} on {name}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in report["headline"].items()))
            reports[name] = report
    return reports


def _register(config: Config, registry: Registry, layout: Layout, run: str, trained: list[str],
              reports: dict[str, dict[str, Any]], distill_report: dict[str, Any], decision: dict[str, Any]) -> str:
    """The candidate as the registry's next version, with what it is and what it saw (the partitions'
    labelling ``reports``)."""
    label_data = [{"partition": p, "uri": layout.labels_uri(p), "rows": reports[p]["rows"]["labelled_total"],
                   "teacher_model": reports[p].get("teacher_model"), "prompt_hash": reports[p].get("prompt_hash")}
                  for p in trained]
    info = {
        "run": run,
        "task": config.task.name,
        "task_type": config.task.type,
        "labels": config.task.label_names,
        "teacher_model": config.teacher.model,
        "prompt_hash": prompts.prompt_hash(config.task),
        "student_model": config.student.model,
        "label_data": label_data,
        "train_rows": distill_report["rows"]["train"],
        "metrics": distill_report["evaluation"],
        "gate": decision,
        "distill_report": f"{layout.run_uri(run)}/distill/report.json",
        "config": to_dict(config),
    }
    with tempfile.TemporaryDirectory(prefix="raydistill-register-") as tmp:
        local = model_store.fetch(f"{layout.run_uri(run)}/distill/model", config.storage, tmp)
        return registry.register(Path(local), info)


def _finish(layout: Layout, record: dict[str, Any], todo: list[str], started: float,
            log: Callable[[str], None]) -> dict[str, Any]:
    """The run's record, then ``state.json`` (last: until it is written, the partitions are not done)."""
    record["wall_seconds"] = round(time.time() - started, 2)
    storage.write_json(layout.fs, storage.join(layout.run_path(record["run"]), "run.json"), record)
    state = layout.read_state()
    for partition in todo:
        state["partitions"][partition] = record["run"]
    state["runs"].append({"run": record["run"], "partitions": todo, "status": record["status"],
                          "version": record.get("version"), "promoted": record.get("promoted", False),
                          "finished_at": iso_time()})
    storage.write_json(layout.fs, layout.state, state)
    return record


def format_retrain_report(record: dict[str, Any]) -> str:
    if record["status"] == "nothing to do":
        return "retrain: nothing to do (every partition is done)"
    lines = [f"retraining run {record['run']}: {record['status']} in {record['wall_seconds']}s"]
    for partition, rows in record["labelling"].items():
        lines.append(f"  {partition}: {rows['labelled_total']} rows labelled ({rows['labelled_this_run']} this run, "
                     f"{rows['skipped_already_committed']} skipped as done before, {rows['quarantined']} quarantined, "
                     f"{rows['abstained']} abstained), {rows['tokens_this_run']} tokens in {rows['labelling_seconds']}s "
                     f"({rows['rows_per_second']} rows/s); "
                     f"labels {rows['label_distribution']}")
    if record["status"] != "done":
        return "\n".join(lines)
    gate_ = record["gate"]
    lines.append(f"  trained on {len(record['trained_on'])} partition(s); candidate {record['version']}: "
                 f"{gate_['metric']} {_figure(gate_['candidate'])} on {gate_['set']}"
                 + (f", production {record['production_before']} {_figure(gate_['production'])}"
                    if gate_.get("production") is not None else ""))
    lines.append(f"  {'PROMOTED' if record['promoted'] else 'not promoted'}: " + "; ".join(gate_["reasons"]))
    shift = record["drift"]["label_distribution"]
    agreement = ", ".join(f"{name} {a['agreement']}" for name, a in record["drift"]["student_teacher_agreement"].items()
                          if a)
    lines.append(f"  drift: label TV {shift['total_variation']}, PSI {shift['psi']}; student-teacher agreement on "
                 f"new texts: {agreement}")
    lines.append(f"  production now {record['production']}; drift report {record['drift']['png']}")
    return "\n".join(lines)


def _figure(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
