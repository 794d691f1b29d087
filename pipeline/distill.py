"""The distillation job: teacher-labelled parquet -> Ray Train DDP student -> export + evaluation.

Output layout under ``distill.output`` (local or s3://)::

    manifest.json      labels, mode, threshold, student: what this run folder holds
    train/             Ray Train run: checkpoints per epoch and every distill.checkpoint_every_batches
                       batches (the latest resumed from on restart)
    model/             the best checkpoint, self-contained: weights, tokenizer,
                       raydistill.json (labels, config, history, evaluation, its files' hashes);
                       replaced whole or not at all (pipeline.model_store)
    evaluation/        <set>.json, <set>_confusion.png, <set>_pr.png; teacher_holdout.json holds "holdout":
                       the held-out rows and how many were evaluated (at most HOLDOUT_EVAL_MAX)
    evaluation_model/  while the teacher hold-out is evaluated only: the model the student replicas load
    report.json        the run's report
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from pipeline import model_store, schemas, storage, tasks
from pipeline.cluster import init_ray
from pipeline.config import Config, ConfigError, TaskConfig, to_dict
from pipeline.evaluate import evaluate, load_task_gold, write_evaluation
from pipeline.faults import injected_faults
from pipeline.selection import keep_mask, kept_at_thresholds


def train_columns(kind: Any) -> list[str]:
    """The labelled columns distillation reads: id, text, the task type's label columns, the vote counts."""
    return ["id", "text", *(field.name for field in kind.label_fields()), "consistency", "n_valid"]

HOLDOUT_EVERY = 20  # without a gold validation set, 1 id in 20 is held out to compare with the teacher
# The student is compared with the teacher on at most this many held-out rows: those whose id hash is lowest,
# a uniform sample of the hold-out, the same in every run and whatever the files' order. 20,000 rows put a
# 95% interval of about +/-0.007 on an accuracy near 0.8; the whole hold-out is 5M rows of a 100M-row corpus.
HOLDOUT_EVAL_MAX = 20_000
# Up to this many train rows, the filtered rows are materialised in the object store before training (their
# blocks then go in a seeded random order); above it they stream from the parquet files every epoch, so that
# a 100M-row corpus is never pinned in the object store (see _train_dataset).
TRAIN_MATERIALIZE_MAX_ROWS = 2_000_000


class LabelDataError(ValueError):
    """The teacher-labelled data does not fit the config's label set."""


def id_hashes(ids: list[str]) -> np.ndarray:
    """The first 64 bits of each id's SHA-256, as ``uint64``: the hold-out and its evaluated sample draw on them."""
    return np.fromiter((int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") for i in ids),
                       dtype=np.uint64, count=len(ids))


def holdout_of_hashes(hashes: np.ndarray) -> np.ndarray:
    """Which :func:`id_hashes` are held out: those whose first 32 bits are a multiple of ``HOLDOUT_EVERY``."""
    return (hashes >> np.uint64(32)) % np.uint64(HOLDOUT_EVERY) == 0


def holdout_mask(ids: list[str]) -> np.ndarray:
    """A stable ~5% of ids (by hash), the same in every run and on every worker."""
    return holdout_of_hashes(id_hashes(ids))


def run_distill(config: Config, *, smoke: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate and export the student of ``config``; returns the report (also in ``report.json``)."""
    held: list[storage.OutputLease] = []  # the output's lease, taken once the inputs are checked
    try:
        return _run_distill(config, smoke, log, held)
    finally:
        for lease in held:
            lease.release()


def _run_distill(config: Config, smoke: bool, log: Callable[[str], None], held: list) -> dict[str, Any]:
    started = time.time()
    distill, student = _require(config.distill, "distill"), _require(config.student, "student")
    label_names = config.task.label_names
    kind = tasks.for_config(config)
    if distill.mode not in kind.modes:
        raise ConfigError(f"distill.mode: a {kind.name} task trains with {' or '.join(kind.modes)}, "
                          f"got {distill.mode!r}")
    threshold = distill.min_consistency
    if threshold is None:
        threshold = kind.default_min_consistency[distill.mode]
    labels_uri = distill.labels or config.data.output

    # Everything checkable is checked before any worker starts.
    _check_student(student.model)
    gold = {
        name: load_task_gold(uri, kind, f"distill.{name}", config.storage)
        for name, uri in (("validation", distill.validation), ("test", distill.test))
        if uri
    }
    sources = _label_sources(config, labels_uri)
    holdout = not gold.get("validation")
    init_ray()  # the scan runs in Ray tasks
    scan = _scan_labelled(sources, kind, threshold, holdout)
    if scan["train_rows"] == 0:
        raise LabelDataError(
            f"distill.min_consistency: no training rows left: {scan['rows']} labelled rows, "
            f"{scan['kept_at_threshold']} with consistency >= {threshold} and a valid vote "
            f"(rows kept per threshold: {scan['kept_per_threshold']})"
        )
    out_fs, out_root = storage.resolve(distill.output, config.storage)
    storage.claim_output(
        out_fs, storage.join(out_root, "manifest.json"), _manifest(config, threshold, labels_uri), distill.output,
        "distill.output",
    )
    lease = storage.OutputLease(out_fs, out_root, distill.output, "distill.output", "distillation job")
    lease.acquire()
    held.append(lease)
    if student.max_length is None:  # chosen by the data; the manifest keeps "by the data", the export the value
        student = dataclasses.replace(student, max_length=choose_max_length(sources, student.model, log))
        config = dataclasses.replace(config, student=student)
    log(
        f"[distill] {scan['rows']} labelled rows; mode {distill.mode}, min consistency {threshold}: "
        f"{scan['train_rows']} train rows, {scan['holdout_rows']} teacher hold-out rows"
    )

    train, data_config = _train_dataset(sources, config.task, threshold, holdout, distill.seed, scan["train_rows"])
    scale = training_scale(distill)
    log(f"[distill] {scale[0]} worker(s)" + ("" if distill.use_gpu else f", {scale[1]} thread(s) each"))
    train_started = time.time()
    run_id = uuid.uuid4().hex
    result = _fit(config, train, data_config, scan["train_rows"], gold.get("validation"), out_fs, out_root, run_id,
                  scale)
    train_seconds = time.time() - train_started

    best, best_metrics = _best_checkpoint(result, bool(gold.get("validation")))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(best.to_directory(str(Path(tmp) / "model")))
        (model_dir / "training_state.pt").unlink(missing_ok=True)
        with result.checkpoint.as_directory() as latest:  # the latest holds every epoch's metrics
            history = _read_history(Path(latest))
        (model_dir / "history.json").unlink(missing_ok=True)
        export = {
            "labels": label_names,
            "task": config.task.name,
            "task_type": kind.name,
            "max_length": student.max_length,
            "mode": distill.mode,
            "min_consistency": threshold,
            "best_epoch": best_metrics.get("epoch"),
            "history": history,
            "config": to_dict(config),
        }
        evaluations = _evaluate_all(config, model_dir, export, gold, scan, sources, out_fs, out_root, log)
        export["evaluation"] = {name: _headline(r) for name, r in evaluations.items()}
        model_store.seal(model_dir, export)
        model_store.publish(pafs.LocalFileSystem(), str(model_dir), out_fs, storage.join(out_root, "model"))

    epochs_run = len(history)
    epochs_this_run = sum(1 for epoch in history if epoch.get("run_id") == run_id)
    report = {
        "job": "distill",
        "task": config.task.name,
        "smoke": smoke,
        "student_model": student.model,
        "max_length": student.max_length,
        "mode": distill.mode,
        "min_consistency": threshold,
        "rows": {
            "labelled": scan["rows"],
            "kept_per_threshold": scan["kept_per_threshold"],
            "kept_at_threshold": scan["kept_at_threshold"],
            "train": scan["train_rows"],
            "teacher_holdout": scan["holdout_rows"],
            # the held-out rows the student was evaluated on (at most HOLDOUT_EVAL_MAX; 0 with a gold validation set)
            "teacher_holdout_evaluated": evaluations["teacher_holdout"]["holdout"]["evaluated"]
            if "teacher_holdout" in evaluations else 0,
        },
        "epochs": epochs_run,
        "best_epoch": best_metrics.get("epoch"),
        "history": history,
        "workers": {"count": scale[0], "threads_per_worker": scale[1], "gpu": distill.use_gpu},
        "evaluation": {name: _headline(r) for name, r in evaluations.items()},
        "model": f"{distill.output.rstrip('/')}/model",
        "time": {
            "wall_seconds": round(time.time() - started, 2),
            "train_seconds": round(train_seconds, 2),
            "epochs_this_run": epochs_this_run,
            "train_samples_per_second": round(scan["train_rows"] * epochs_this_run / train_seconds, 2),
        },
    }
    storage.write_json(out_fs, storage.join(out_root, "report.json"), report)
    return report


MAX_LENGTH_SAMPLE = 10_000  # labelled texts whose token lengths choose student.max_length
MAX_LENGTH_PERCENTILE = 99
MAX_LENGTH_CAP = 512


def choose_max_length(sources: list["LabelSource"], model: str, log: Callable[[str], None] = print) -> int:
    """``student.max_length`` chosen by the data: the 99th percentile of the token lengths (special tokens
    included) of the first ``MAX_LENGTH_SAMPLE`` labelled texts, rounded up to a multiple of 8, capped at
    ``MAX_LENGTH_CAP`` and at the model's own limit. Read batch by batch: the driver holds the sample only."""
    import pyarrow.parquet as pq
    from transformers import AutoConfig, AutoTokenizer

    texts: list[str] = []
    for source in sources:
        for file in source.files:
            with source.fs.open_input_file(file) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=2048, columns=["text"]):
                    texts += [t for t in batch.column(0).to_pylist() if t][:MAX_LENGTH_SAMPLE - len(texts)]
                    if len(texts) >= MAX_LENGTH_SAMPLE:
                        break
            if len(texts) >= MAX_LENGTH_SAMPLE:
                break
    tokenizer = AutoTokenizer.from_pretrained(model)
    limits = [MAX_LENGTH_CAP, getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", MAX_LENGTH_CAP)]
    if isinstance(tokenizer.model_max_length, int) and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]] or [8])
    percentile = float(np.percentile(lengths, MAX_LENGTH_PERCENTILE))
    chosen = int(min(min(limits), max(8, 8 * math.ceil(percentile / 8))))
    log(f"[distill] student.max_length {chosen}: the {MAX_LENGTH_PERCENTILE}th percentile of {len(lengths)} texts' "
        f"token lengths is {percentile:.0f} (longest {lengths.max()}; cap {min(limits)}); "
        f"{float(np.mean(lengths > chosen)):.1%} of them are truncated")
    return chosen


def _check_student(model: str) -> None:
    """The student's config must load here first: a wrong name or path would otherwise fail each of the
    workers' restarts (``distill.max_failures``) in turn, minutes later."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ConfigError(f"student.model: {model} cannot be loaded: {err}") from err


def _require(section: Any, name: str) -> Any:
    if section is None:
        raise ConfigError(f"{name}: this job needs the {name} section of the config")
    return section


def _manifest(config: Config, threshold: float, labels_uri: str) -> dict[str, Any]:
    distill, student = config.distill, config.student
    return {
        "labels": config.task.label_names,
        # Named for the new types only, so that a classification run folder made before types resumes.
        **({"task_type": config.task.type} if config.task.type != "classification" else {}),
        "labelled_data": labels_uri,
        "extra_labels": list(distill.extra_labels),
        "mode": distill.mode,
        "min_consistency": threshold,
        "student": dataclasses.asdict(student),
        "training": {
            key: getattr(distill, key)
            for key in ("batch_size", "learning_rate", "weight_decay", "warmup_ratio",
                        "gradient_accumulation", "num_workers", "seed")
        },
    }


@dataclasses.dataclass(frozen=True)
class LabelSource:
    """One labelled dataset trained on: ``distill.labels`` or one of ``distill.extra_labels``."""

    uri: str
    fs: Any
    files: list[str]


def _label_sources(config: Config, labels_uri: str) -> list[LabelSource]:
    sources = []
    for key, uri in [("distill.labels", labels_uri)] + [
        (f"distill.extra_labels[{i}]", u) for i, u in enumerate(config.distill.extra_labels)
    ]:
        fs, root = storage.resolve(uri, config.storage)
        files = storage.list_files(fs, storage.join(root, "data"), (".parquet",))
        if not files:
            raise LabelDataError(f"{key}: no labelled parquet under {uri}/data")
        _check_label_manifest(fs, root, uri, config.task, key)
        sources.append(LabelSource(uri, fs, files))
    return sources


def _check_label_manifest(fs: Any, root: str, uri: str, task: TaskConfig, key: str) -> None:
    path = storage.join(root, "manifest.json")
    label_names = task.label_names
    if storage.exists(fs, path):
        manifest = storage.read_json(fs, path)
        labelled_type = manifest.get("task_type", "classification")
        if labelled_type != task.type:
            raise LabelDataError(f"{key}: {uri} was labelled for a {labelled_type} task, the config's "
                                 f"task.type is {task.type}")
        labels = manifest.get("labels")
        if labels != label_names:
            raise LabelDataError(
                f"{key}: {uri} was labelled with labels {labels}, the config has {label_names} "
                "(soft labels follow that order)"
            )


def _scan_labelled(sources: list[LabelSource], kind: Any, threshold: float, holdout: bool) -> dict[str, Any]:
    """One pass over the label columns of every source, in Ray tasks (a group of files each): validate them
    and count what each threshold keeps. The driver adds up the tasks' counts and keeps the
    ``HOLDOUT_EVAL_MAX`` lowest hashes of held-out ids, whose largest (``holdout_cutoff``) bounds the
    evaluated sample; None when every held-out row is evaluated."""
    import ray

    from pipeline.cluster import map_files

    refs = [ref for source in sources
            for ref in map_files(source.fs, source.files, _scan_files, kind, threshold, holdout, HOLDOUT_EVAL_MAX)]
    total: dict[str, Any] = {"rows": 0, "kept_at_threshold": 0, "train_rows": 0, "holdout_rows": 0,
                             "kept_per_threshold": {}}
    lowest = np.zeros(0, dtype=np.uint64)
    while refs:  # one task's result at a time: the driver holds two tasks' hashes at most
        (done,), refs = ray.wait(refs, num_returns=1)
        part = _gathered(done)
        lowest = _lowest(np.concatenate([lowest, part.pop("holdout_hashes")]), HOLDOUT_EVAL_MAX)
        for key, value in part.items():
            if key == "kept_per_threshold":
                for threshold_key, n in value.items():
                    total[key][threshold_key] = total[key].get(threshold_key, 0) + n
            else:
                total[key] += value
    total["holdout_cutoff"] = int(lowest.max()) if total["holdout_rows"] > HOLDOUT_EVAL_MAX else None
    return total


def _scan_files(fs: Any, files: list[str], kind: Any, threshold: float, holdout: bool,
                sample_max: int) -> dict[str, Any]:
    """Ray task: :func:`_scan_labelled` over a group of files; counts, and the ``sample_max`` lowest id
    hashes of the held-out rows with a valid vote."""
    import pyarrow.parquet as pq

    expected = kind.labelled_schema()
    columns = [c for c in train_columns(kind) if c != "text"]
    counts: dict[str, Any] = {"rows": 0, "kept_at_threshold": 0, "train_rows": 0, "holdout_rows": 0,
                              "kept_per_threshold": {}}
    lowest = np.zeros(0, dtype=np.uint64)
    for file in files:
        table = pq.read_table(file, filesystem=fs, columns=columns)
        schemas.check_columns(table.schema, pa.schema([expected.field(c) for c in columns]), file)
        kind.check_labelled(table, file)
        consistency, n_valid = table.column("consistency").to_numpy(), table.column("n_valid").to_numpy()
        hashes = id_hashes(table.column("id").to_pylist()) if holdout else np.zeros(table.num_rows, np.uint64)
        held = holdout_of_hashes(hashes) if holdout else np.zeros(table.num_rows, dtype=bool)
        keep = keep_mask(consistency, n_valid, threshold)
        counts["rows"] += table.num_rows
        counts["kept_at_threshold"] += int(keep.sum())
        counts["train_rows"] += int((keep & ~held).sum())
        evaluable = held & (n_valid > 0)
        counts["holdout_rows"] += int(evaluable.sum())
        for key, n in kept_at_thresholds(consistency, n_valid).items():
            counts["kept_per_threshold"][key] = counts["kept_per_threshold"].get(key, 0) + n
        lowest = _lowest(np.concatenate([lowest, hashes[evaluable]]), sample_max)
    counts["holdout_hashes"] = lowest
    return counts


def _lowest(values: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` smallest of ``values`` (all of them when fewer), unordered."""
    return values if len(values) <= n else np.partition(values, n - 1)[:n]


def _gathered(ref: Any) -> Any:
    """``ray.get(ref)``, with a task's LabelDataError or SchemaError raised as itself: its message names the
    file and row for the user, without Ray's wrapping and the worker's traceback."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, (LabelDataError, schemas.SchemaError)):
            raise err.cause from None
        raise


def _train_rows(batch: pa.Table, task: TaskConfig, threshold: float, holdout: bool) -> dict[str, np.ndarray]:
    """Ray Data map: the rows kept at the threshold, with the task type's targets.

    Texts stay text: the train workers cut them into batches of like lengths and tokenise each
    (``student.length_bucketed``), padded to the batch's longest text.
    """
    keep = keep_mask(batch.column("consistency").to_numpy(), batch.column("n_valid").to_numpy(), threshold)
    if holdout:
        keep &= ~holdout_mask(batch.column("id").to_pylist())
    return tasks.get(task).train_rows(batch.filter(pa.array(keep)))


def _train_dataset(sources: list[LabelSource], task: TaskConfig, threshold: float, holdout: bool, seed: int,
                   train_rows: int) -> tuple[Any, Any]:
    """The train rows as a Ray Dataset, and the ``DataConfig`` Ray Train feeds them with (None: its default).

    Up to ``TRAIN_MATERIALIZE_MAX_ROWS`` rows they are materialised before training: the train workers
    hold the cluster's CPUs, and a plain task (no tokenizer to load, no actor to start) filters the rows
    once; its blocks go in a seeded random order (the workers also shuffle rows within a buffer each epoch).
    Above it, materialising would pin the kept texts in the object store for the whole run (about 20 GB
    for 100M rows of 200 characters), spilling to disk or failing: the rows stream instead, read and
    filtered anew each epoch by Ray Data on the CPUs the train workers leave (each holds one of Ray's),
    from the files in a seeded random order, and in that order (``preserve_order``), so that an epoch
    resumed from a checkpoint inside it sees its rows in the same order and skips those it trained.
    """
    import random

    import ray.data
    from ray.train import DataConfig

    columns = train_columns(tasks.get(task))
    streaming = train_rows > TRAIN_MATERIALIZE_MAX_ROWS
    order = random.Random(seed)
    parts = []
    for source in sources:
        files = list(source.files)
        if streaming:
            order.shuffle(files)
        parts.append(ray.data.read_parquet(files, filesystem=source.fs).select_columns(columns))
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    kept = ds.map_batches(
        _train_rows,
        fn_kwargs={"task": task, "threshold": threshold, "holdout": holdout},
        batch_format="pyarrow",
    )
    if not streaming:
        return kept.materialize().randomize_block_order(seed=seed), None
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return kept, DataConfig(execution_options=options)


def training_scale(distill: Any) -> tuple[int, Optional[int]]:
    """DDP workers and, on CPU, torch threads per worker, for ``distill`` on the running Ray cluster.

    Unset, they follow the cluster: with ``use_gpu`` one worker per GPU (NCCL; threads left to Ray); on CPU
    one worker, with as many threads as a node has cores shared among the workers it holds. On CPU a
    worker's forward and backward pass use every core given to it, while each added worker adds a gloo
    all-reduce of all the gradients per step (bench/distill_speed.py measures both on one machine).
    """
    import ray

    if distill.use_gpu:
        return distill.num_workers or max(1, int(ray.cluster_resources().get("GPU", 0))), distill.threads_per_worker
    workers = distill.num_workers or 1
    if distill.threads_per_worker:
        return workers, distill.threads_per_worker
    nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive") and node["Resources"].get("CPU")]
    per_node = math.ceil(workers / max(1, len(nodes)))
    return workers, max(1, int(max(nodes, default=1)) // per_node)


def _fit(config: Config, train: Any, data_config: Any, train_rows: int, validation, fs: Any, root: str,
         run_id: str, scale: tuple[int, Optional[int]]) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.student import train_loop_per_worker

    distill, student = config.distill, config.student
    loop_config = {
        "student_model": student.model,
        "max_length": student.max_length,
        "labels": config.task.label_names,
        "task": config.task,
        "mode": distill.mode,
        "epochs": distill.epochs,
        "batch_size": distill.batch_size,
        "learning_rate": distill.learning_rate,
        "weight_decay": distill.weight_decay,
        "warmup_ratio": distill.warmup_ratio,
        "gradient_accumulation": distill.gradient_accumulation,
        "use_gpu": distill.use_gpu,
        "threads_per_worker": scale[1],
        "seed": distill.seed,
        "run_id": run_id,
        "checkpoint_every_batches": distill.checkpoint_every_batches,
        "faults": injected_faults(),
        "train_rows": train_rows,
        "validation": {"texts": validation[0], "targets": validation[1]} if validation else None,
    }
    score = ("val_macro_f1", "max") if validation else ("train_loss", "min")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        # A CPU worker holds one CPU of Ray's and computes on threads_per_worker cores: the others stay free
        # for Ray Data, which feeds it.
        scaling_config=ScalingConfig(num_workers=scale[0], use_gpu=distill.use_gpu),
        run_config=RunConfig(
            name="train",
            storage_path=root,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(checkpoint_score_attribute=score[0], checkpoint_score_order=score[1],
                                               num_to_keep=distill.keep_checkpoints),
            failure_config=FailureConfig(max_failures=distill.max_failures),
        ),
        datasets={"train": train},
        **({"dataset_config": data_config} if data_config is not None else {}),
    )
    return trainer.fit()


def _best_checkpoint(result: Any, by_validation: bool) -> tuple[Any, dict[str, Any]]:
    candidates = [pair for pair in result.best_checkpoints if not pair[1].get("partial")]
    if not candidates:
        raise RuntimeError("training reported no checkpoint")
    if by_validation:
        return max(candidates, key=lambda pair: pair[1].get("val_macro_f1", -1.0))
    return max(candidates, key=lambda pair: pair[1].get("epoch", -1))


def _read_history(model_dir: Path) -> list[dict[str, Any]]:
    import json

    from pipeline.student import HISTORY_FILE

    path = model_dir / HISTORY_FILE
    return json.loads(path.read_text()) if path.exists() else []


EVAL_MODEL = "evaluation_model"  # under distill.output: the model the replicas load while they evaluate it
EVAL_BATCH_ROWS = 1024  # held-out rows per replica call
EVAL_REPLICAS_MAX = 4  # student replicas evaluating on CPU (one GPU each with distill.use_gpu)


def _evaluate_all(config: Config, model_dir: Path, export: dict[str, Any], gold: dict[str, Any],
                  scan: dict[str, Any], sources: list[LabelSource], out_fs: Any, out_root: str,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Gold sets when given (small files: predicted here); otherwise agreement with the teacher on a
    sample of the held-out rows, predicted by student replicas in Ray Data (:func:`_teacher_holdout`)."""
    kind = tasks.for_config(config)
    kind.target_precision = config.distill.target_precision
    results = {}  # name -> (texts, targets, predictions, report)
    if any(texts for texts, _ in gold.values()):
        tokenizer, model = kind.load_student(str(model_dir))
        for name, (texts, targets) in gold.items():
            if texts:
                report, predictions = evaluate(kind, model, tokenizer, texts, targets, config.student.max_length)
                results[name] = (texts, targets, predictions, report)
    if "validation" not in gold and scan["holdout_rows"]:
        texts, targets, predictions = _teacher_holdout(config, kind, model_dir, export, scan, sources, out_fs,
                                                       out_root)
        if texts:  # none where the rows changed since the scan
            report = kind.evaluate(targets, predictions)
            report["holdout"] = {"rows": scan["holdout_rows"], "evaluated": len(texts),
                                 "max_evaluated": HOLDOUT_EVAL_MAX,
                                 "sample": "the held-out rows whose id hash is lowest"}
            results["teacher_holdout"] = (texts, targets, predictions, report)
    folder = storage.join(out_root, "evaluation")
    reports = {}
    for name, (texts, targets, predictions, report) in results.items():
        write_evaluation(out_fs, folder, name, report, kind.evaluation_rows(texts, targets, predictions),
                         kind.plots(report))
        log(kind.format_evaluation(name, report))
        if name == "teacher_holdout":
            log(f"[distill] teacher hold-out: {len(texts)} of {scan['holdout_rows']} held-out rows evaluated")
        reports[name] = report
    return reports


def _teacher_holdout(config: Config, kind: Any, model_dir: Path, export: dict[str, Any], scan: dict[str, Any],
                     sources: list[LabelSource], out_fs: Any, out_root: str) -> tuple[list[str], list[Any], dict]:
    """Texts, the teacher's results and the student's predictions of the evaluated held-out rows.

    Ray Data reads the labelled files and keeps the held-out rows with a valid vote whose id hash is at
    most ``scan["holdout_cutoff"]`` (the ``HOLDOUT_EVAL_MAX`` lowest); student replicas predict them. The
    replicas load the model from ``distill.output`` (``EVAL_MODEL``, removed after), where every node
    reads it, as the predict job's do. The driver gets the sample only.
    """
    import ray
    from ray.data import ActorPoolStrategy

    staged = storage.join(out_root, EVAL_MODEL)
    # Absolute where local: the replicas' working folder need not be the driver's.
    uri = staged if isinstance(out_fs, pafs.LocalFileSystem) else f"{config.distill.output.rstrip('/')}/{EVAL_MODEL}"
    model_store.seal(model_dir, export)
    model_store.publish(pafs.LocalFileSystem(), str(model_dir), out_fs, staged)
    try:
        columns = ["id", "text", "n_valid", *(field.name for field in kind.label_fields())]
        parts = [ray.data.read_parquet(s.files, filesystem=s.fs).select_columns(columns) for s in sources]
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        sample = ds.map_batches(_holdout_sample, fn_kwargs={"cutoff": scan["holdout_cutoff"]},
                                batch_format="pyarrow")
        use_gpu = config.distill.use_gpu
        replicas = int(ray.cluster_resources().get("GPU", 1)) if use_gpu else \
            min(EVAL_REPLICAS_MAX, max(1, int(ray.cluster_resources().get("CPU", 1)) - 1))
        predicted = sample.map_batches(
            HoldoutPredictor,
            fn_constructor_kwargs={"model_dir": uri, "storage_config": config.storage, "use_gpu": use_gpu},
            batch_size=EVAL_BATCH_ROWS,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=1, max_size=max(1, replicas)),
            num_gpus=1 if use_gpu else 0,
        )
        batches = [b for b in predicted.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    finally:
        storage.delete_dir(out_fs, staged)
    if not batches:
        return [], [], {field.name: [] for field in kind.prediction_fields()}
    # Ties of the cutoff hash (or rows labelled since the scan) may bring a few more: the order is total.
    table = pa.concat_tables(batches, promote_options="permissive")
    table = table.sort_by([("holdout_rank", "ascending"), ("id", "ascending")]).slice(0, HOLDOUT_EVAL_MAX)
    predictions = {field.name: table.column(f"predicted_{field.name}").to_pylist()
                   for field in kind.prediction_fields()}
    return table.column("text").to_pylist(), kind.teacher_targets(table), predictions


def _holdout_sample(batch: pa.Table, cutoff: Optional[int]) -> pa.Table:
    """Ray Data map: the held-out rows with a valid vote whose id hash is at most ``cutoff`` (None: all),
    with that hash (``holdout_rank``)."""
    hashes = id_hashes(batch.column("id").to_pylist())
    keep = holdout_of_hashes(hashes) & (batch.column("n_valid").to_numpy() > 0)
    if cutoff is not None:
        keep &= hashes <= np.uint64(cutoff)
    return batch.filter(pa.array(keep)).drop_columns(["n_valid"]).append_column(
        "holdout_rank", pa.array(hashes[keep], pa.uint64()))


class HoldoutPredictor:
    """Ray Data actor: a :class:`pipeline.predict.StudentPredictor` that keeps the batch's own columns (text,
    the teacher's label columns) beside the student's, which it names ``predicted_<column>``."""

    def __init__(self, **kwargs: Any):
        from pipeline.predict import StudentPredictor

        self.student = StudentPredictor(**kwargs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows:
            predicted = self.student(batch.select(["id", "text"]))
        else:
            predicted = self.student.schema.empty_table()
        for field in self.student.kind.prediction_fields():
            batch = batch.append_column(f"predicted_{field.name}", predicted.column(field.name))
        return batch


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    return {"examples": report["examples"], **report["headline"]}


def format_distill_report(report: dict[str, Any]) -> str:
    rows, time_ = report["rows"], report["time"]
    lines = [
        f"distillation report: {report['task']}, student {report['student_model']}, mode {report['mode']}, "
        f"max_length {report.get('max_length')}",
        f"  rows     {rows['labelled']} labelled; kept per min consistency {rows['kept_per_threshold']}",
        f"           {rows['kept_at_threshold']} kept at {report['min_consistency']}, "
        f"{rows['train']} trained on, {rows['teacher_holdout']} held out"
        + (f" ({rows['teacher_holdout_evaluated']} evaluated)" if rows.get("teacher_holdout_evaluated") else ""),
        f"  epochs   {report['epochs']} (best {report['best_epoch']}): "
        + ", ".join(f"loss {h['train_loss']:.4f}" for h in report["history"]),
        f"  time     {time_['wall_seconds']}s wall, {time_['train_seconds']}s training, "
        f"{time_['train_samples_per_second']} samples/s ({report['workers']['count']} worker(s)"
        + ("" if report["workers"]["gpu"] else f" x {report['workers']['threads_per_worker']} threads") + ")",
    ]
    for name, scores in report["evaluation"].items():
        figures = ", ".join(f"{key.replace('_f1', '-F1').replace('_', ' ')} {value:.3f}"
                            for key, value in scores.items() if key != "examples" and isinstance(value, float))
        lines.append(f"  {name:<8} {figures} ({scores['examples']} examples)")
    lines.append(f"  model    {report['model']}")
    return "\n".join(lines)

