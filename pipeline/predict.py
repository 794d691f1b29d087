"""Batch prediction with an exported student: Ray Data over any corpus size.

Output layout under the output folder (local or s3://), exactly once as the
labelling job's (:mod:`pipeline.committed`)::

    manifest.json          the model (and the hash of its files) and the input
    data/part-*.parquet    id and the task type's prediction columns (classification: label,
                           probabilities; multilabel: labels, probabilities; spans: spans with
                           character offsets); ``commit_rows`` rows a file
    quarantine/*.parquet   input rows without a usable id or text, with the reason
    lease.json             held while a job runs
    report.json            the run's report

A job killed part way and started again with the same arguments predicts
only the rows not yet committed. Another model into the same output is
refused: the predictions of two models never mix.
"""

from __future__ import annotations

import collections
import hashlib
import json
import tempfile
import time
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import model_store, storage
from pipeline.cluster import init_ray
from pipeline.committed import (OutputLayout, committed_files, committed_index, pending, remove_duplicate_ids, scan,
                                shard_name, write_quarantine)
from pipeline.config import ConfigError, DataConfig, StorageConfig
from pipeline.corpus import open_corpus, read_corpus
from pipeline.onnx_student import load_for_inference, resolve_engine
from pipeline.progress import Progress

PREDICTIONS = pa.schema(  # a classification student's
    [("id", pa.string()), ("label", pa.string()), ("probabilities", pa.list_(pa.float32()))]
)


def prediction_schema(kind: Any) -> pa.Schema:
    return pa.schema([pa.field("id", pa.string()), *kind.prediction_fields()])


class StudentPredictor:
    """Ray Data actor: loads the exported student once, labels batches."""

    def __init__(self, model_dir: str, storage_config: StorageConfig, use_gpu: bool = False,
                 embeddings: bool = False, fingerprint: Optional[str] = None, batch_size: int = 64,
                 engine: str = "auto"):
        import torch

        from pipeline import tasks

        self._tmp = tempfile.mkdtemp(prefix="raydistill-model-")
        local = model_store.fetch(model_dir, storage_config, self._tmp)
        meta = json.loads((local / model_store.META).read_text())
        if fingerprint is not None and model_fingerprint(meta) != fingerprint:
            raise RuntimeError(f"{model_dir} was replaced by another model while this job ran; run it again "
                               "into a new output (the predictions of two models must not mix)")
        self.labels, self.max_length = meta["labels"], meta["max_length"]
        self.kind = tasks.for_model(meta)
        self.schema = prediction_schema(self.kind)
        # ONNX Runtime where the folder has an ONNX export (pipeline.onnx_student) and neither a GPU nor the
        # encoder's embeddings are asked for; torch otherwise. Either computes on the threads Ray gives this actor.
        engine = resolve_engine(engine, meta, use_gpu, embeddings)
        self.tokenizer, self.model = load_for_inference(self.kind, str(local), meta, engine, torch.get_num_threads())
        self.batch_size = batch_size  # texts per forward pass
        self.embeddings = embeddings  # also return the encoder's mean-pooled embedding (FreeAL's selection)
        if use_gpu and torch.cuda.is_available():
            self.model.to("cuda")

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.student import predict_with_embeddings

        texts = batch.column("text").to_pylist()
        if not self.embeddings:
            columns = self.kind.predict(self.model, self.tokenizer, texts, self.max_length, self.batch_size)
            return pa.Table.from_pydict({"id": batch.column("id"), **columns}, schema=self.schema)
        # With the encoder's embeddings (FreeAL's selection: classification students).
        probabilities, embeddings = predict_with_embeddings(
            self.model, self.tokenizer, texts, self.max_length, self.batch_size, embeddings=True)
        table = pa.Table.from_pydict(
            {
                "id": batch.column("id"),
                "label": [self.labels[i] for i in probabilities.argmax(axis=1)] if len(probabilities) else [],
                "probabilities": probabilities.astype("float32").tolist(),
            },
            schema=PREDICTIONS,
        )
        if self.embeddings:
            table = table.append_column("embedding", pa.array(embeddings.astype("float32").tolist(),
                                                              pa.list_(pa.float32())))
        return table


class CommittingPredictor(StudentPredictor):
    """A :class:`StudentPredictor` that commits each batch to ``data/`` under a name made of its ids
    and returns what it wrote: the batch's label counts (``label``, ``rows``; a spans model's count
    entities per type, and rows under the empty label "")."""

    def __init__(self, data_fs: Any, data_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_fs, self.data_path = data_fs, data_path

    def __call__(self, batch: pa.Table) -> pa.Table:
        table = super().__call__(batch)
        if table.num_rows:
            name = shard_name(table.column("id").to_pylist())
            storage.write_parquet_atomic(self.data_fs, storage.join(self.data_path, name), table)
        counts = self.kind.prediction_counts(table) if table.num_rows else {}
        counts = {"": table.num_rows, **counts}  # "": the rows themselves (progress)
        return pa.table({"label": pa.array(list(counts), pa.string()),
                         "rows": pa.array(list(counts.values()), pa.int64())})


def _task_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a model's metadata that says its task (sent to Ray tasks; the rest can be large)."""
    return {key: meta[key] for key in ("labels", "task_type", "config") if key in meta}


def model_fingerprint(meta: dict[str, Any]) -> str:
    """What identifies an exported model: the hash of its file list (with each file's hash), or of its
    whole metadata for a model exported before file lists."""
    basis = meta.get("files") or meta
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def run_predict(
    model_dir: str,
    input_uri: str,
    output_uri: str,
    storage_config: StorageConfig = StorageConfig(),
    *,
    id_column: str = "id",
    text_column: str = "text",
    batch_size: int = 64,
    commit_rows: int = 8192,
    concurrency: int = 1,
    use_gpu: bool = False,
    engine: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write ``id, label, probabilities`` for every row of ``input_uri`` under ``output_uri``.

    ``engine``: ``auto`` predicts through ONNX Runtime when the model has an ONNX export (CPU), with
    torch otherwise; ``torch`` or ``onnx`` force one (:mod:`pipeline.onnx_student`).

    Rows without an id or a usable text, or with an id that occurs twice, go to ``quarantine/``
    with the reason. Resumes a run killed part way (see the module's docstring).
    """
    started = time.time()
    for name, value in (("batch_size", batch_size), ("commit_rows", commit_rows), ("concurrency", concurrency)):
        if value < 1:
            raise ConfigError(f"{name}: must be >= 1, got {value}")
    corpus = open_corpus(
        DataConfig(input=input_uri, output=output_uri, id_column=id_column, text_column=text_column),
        storage_config,
    )
    model_fs, model_path = storage.resolve(model_dir, storage_config)
    meta_path = storage.join(model_path, model_store.META)
    if not storage.exists(model_fs, meta_path):
        raise ConfigError(f"model: {model_dir} holds no exported model ({model_store.META} missing)")
    meta = storage.read_json(model_fs, meta_path)
    fingerprint = model_fingerprint(meta)
    engine = resolve_engine(engine, meta, use_gpu)  # checked here, before any replica starts
    fs, root = storage.resolve(output_uri, storage_config)
    out = OutputLayout(fs, root)
    manifest = {"job": "predict", "model": model_dir, "model_fingerprint": fingerprint, "labels": meta["labels"],
                "input": input_uri}
    storage.claim_output(fs, out.manifest, manifest, output_uri, "output")
    with storage.OutputLease(fs, root, output_uri, "output", "predict job"):
        init_ray()
        rows = read_corpus(corpus)
        committed_ref, _ = committed_index(out)
        counts, duplicates = scan(rows, committed_ref)
        log(f"[predict] {counts['input']} rows: {counts['quarantined']} quarantined, "
            f"{counts['already_done']} already committed, {counts['todo']} left")
        write_quarantine(rows, duplicates, out, expected=counts["quarantined"])
        this_run = _predict(rows, duplicates, committed_ref, out, counts["todo"], log, commit_rows=commit_rows,
                            predictor={"model_dir": model_dir, "storage_config": storage_config, "use_gpu": use_gpu,
                                       "fingerprint": fingerprint, "engine": engine},
                            pool={"batch_size": batch_size, "concurrency": concurrency, "use_gpu": use_gpu})
        del committed_ref
        removed, committed = remove_duplicate_ids(out)
        distribution = _label_distribution(out, _task_meta(meta)) if committed else {}
        wall = time.time() - started
        report = {
            "job": "predict",
            "model": model_dir,
            "engine": engine,
            "rows": {"input": counts["input"], "predicted": committed, "predicted_this_run": this_run["rows"],
                     "already_done": counts["already_done"], "quarantined": counts["quarantined"],
                     "duplicates_removed": removed},
            "quarantine_reasons": counts["problems"],
            "label_distribution": distribution,
            "label_distribution_this_run": this_run["labels"],
            "wall_seconds": round(wall, 2),
            "rows_per_second": round(this_run["rows"] / max(this_run["seconds"], 1e-9), 1),
        }
        storage.write_json(fs, out.report, report)
        return report


def _predict(rows: Any, duplicates: pa.Array, committed_ref: Optional[Any], out: OutputLayout, todo: int,
             log: Callable[[str], None], commit_rows: int, predictor: dict[str, Any],
             pool: dict[str, Any]) -> dict[str, Any]:
    """Stream the rows still to predict through the student replicas; each batch is committed by its
    replica, and the driver adds up the label counts they return (as many rows as labels)."""
    from ray.data import ActorPoolStrategy

    labels: collections.Counter[str] = collections.Counter()
    if todo == 0:
        return {"rows": 0, "labels": {}, "seconds": 0.0}
    pending_rows = rows.map_batches(
        pending, batch_format="pyarrow", fn_kwargs={"duplicates": duplicates, "committed_ref": committed_ref}
    ).repartition(target_num_rows_per_block=commit_rows, strict=True)
    # Each replica predicts in minibatches of batch_size inside a commit_rows batch (predict_with_embeddings).
    summaries = pending_rows.select_columns(["id", "text"]).map_batches(
        CommittingPredictor,
        fn_constructor_kwargs={"data_fs": out.fs, "data_path": out.data, **predictor,
                               "batch_size": pool["batch_size"]},
        batch_size=None,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=pool["concurrency"]),
        num_gpus=1 if pool["use_gpu"] else 0,
    )
    progress = Progress(todo, log, prefix="[predict]", workers="student replicas", verb="predicted", tokens=False)
    rows_done = 0
    for batch in summaries.iter_batches(batch_format="pyarrow", batch_size=None):
        for label, n in zip(batch.column("label").to_pylist(), batch.column("rows").to_pylist()):
            if label == "":  # the batch's rows
                rows_done += n
                progress.committed += n
                progress.update(n, 0)
            else:
                labels[label] += n
    progress.finish()
    return {"rows": rows_done, "labels": dict(labels), "seconds": progress.elapsed()}


def _label_distribution(out: OutputLayout, meta: dict[str, Any]) -> dict[str, int]:
    """Label counts over every committed file (this run's and earlier runs'), counted by Ray tasks."""
    import ray

    from pipeline.cluster import map_files

    counter: collections.Counter[str] = collections.Counter()
    for part in ray.get(map_files(out.fs, committed_files(out), _count_labels, meta)):
        counter.update(part)
    return dict(counter)


def _count_labels(fs: Any, files: list[str], meta: dict[str, Any]) -> dict[str, int]:
    from pipeline import tasks

    kind = tasks.for_model(meta)
    columns = [field.name for field in kind.prediction_fields()]
    counter: collections.Counter[str] = collections.Counter()
    for file in files:
        counter.update(kind.prediction_counts(pq.read_table(file, filesystem=fs, columns=columns)))
    return dict(counter)
