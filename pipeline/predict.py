"""Batch prediction with an exported student: Ray Data over any corpus size."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline import storage
from pipeline.cluster import init_ray
from pipeline.config import DataConfig, StorageConfig
from pipeline.corpus import open_corpus, read_corpus

PREDICTIONS = pa.schema(
    [("id", pa.string()), ("label", pa.string()), ("probabilities", pa.list_(pa.float32()))]
)


def fetch_model(model_dir: str, storage_config: StorageConfig, into: str) -> Path:
    """A local copy of an exported model folder (local or s3://)."""
    fs, path = storage.resolve(model_dir, storage_config)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    pafs.copy_files(path, into, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return Path(into)


class StudentPredictor:
    """Ray Data actor: loads the exported student once, labels batches."""

    def __init__(self, model_dir: str, storage_config: StorageConfig, use_gpu: bool = False,
                 embeddings: bool = False):
        import torch

        from pipeline.student import load_student

        self._tmp = tempfile.mkdtemp(prefix="raydistill-model-")
        local = fetch_model(model_dir, storage_config, self._tmp)
        meta = json.loads((local / "raydistill.json").read_text())
        self.labels, self.max_length = meta["labels"], meta["max_length"]
        self.tokenizer, self.model = load_student(str(local), self.labels)
        self.embeddings = embeddings  # also return the encoder's mean-pooled embedding (FreeAL's selection)
        if use_gpu and torch.cuda.is_available():
            self.model.to("cuda")

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.student import predict_with_embeddings

        probabilities, embeddings = predict_with_embeddings(
            self.model, self.tokenizer, batch.column("text").to_pylist(), self.max_length, embeddings=self.embeddings)
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


def run_predict(
    model_dir: str,
    input_uri: str,
    output_uri: str,
    storage_config: StorageConfig = StorageConfig(),
    *,
    id_column: str = "id",
    text_column: str = "text",
    batch_size: int = 256,
    concurrency: int = 1,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Write ``id, label, probabilities`` for every row of ``input_uri`` under ``output_uri``.

    Rows without an id or a usable text go to ``quarantine/`` with the reason.
    """
    from ray.data import ActorPoolStrategy
    from ray.data.expressions import col

    started = time.time()
    corpus = open_corpus(
        DataConfig(input=input_uri, output=output_uri, id_column=id_column, text_column=text_column),
        storage_config,
    )
    init_ray()
    out_fs, out_root = storage.resolve(output_uri, storage_config)
    for part in ("data", "quarantine"):
        storage.delete_dir(out_fs, storage.join(out_root, part))
    rows = read_corpus(corpus).materialize()
    good = rows.filter(expr=col("problem").is_null())
    bad = rows.filter(expr=col("problem").is_not_null())
    n_bad = bad.count()
    if n_bad:
        bad.write_parquet(storage.join(out_root, "quarantine"), filesystem=out_fs)
    predictions = good.select_columns(["id", "text"]).map_batches(
        StudentPredictor,
        fn_constructor_kwargs={"model_dir": model_dir, "storage_config": storage_config, "use_gpu": use_gpu},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=concurrency),
        num_gpus=1 if use_gpu else 0,
    )
    predictions.write_parquet(storage.join(out_root, "data"), filesystem=out_fs)
    written = storage.read_parquet(out_fs, storage.join(out_root, "data"), columns=["label"]) if good.count() else None
    counts = {} if written is None else {
        v["values"]: v["counts"] for v in pc.value_counts(written.column("label")).to_pylist()
    }
    report = {
        "job": "predict",
        "model": model_dir,
        "rows": {"input": rows.count(), "predicted": sum(counts.values()), "quarantined": n_bad},
        "label_distribution": counts,
        "wall_seconds": round(time.time() - started, 2),
    }
    storage.write_json(out_fs, storage.join(out_root, "report.json"), report)
    return report
