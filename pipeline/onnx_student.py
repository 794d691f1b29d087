"""Serving an exported student through ONNX Runtime.

``raydistill export-onnx MODEL`` adds ``model.onnx`` to an exported model folder: the encoder and its
head as one ONNX graph with dynamic batch and sequence axes (inputs ``input_ids`` and
``attention_mask``, output ``logits``), with ``--int8`` its weights quantised to 8 bits (ONNX
Runtime's dynamic quantisation: int8 weights, activations quantised per batch). The folder is then
sealed and published anew, as a whole (:mod:`pipeline.model_store`): its fingerprint changes, so
predictions of the ONNX model never join an output started with the torch one.

Prediction (:class:`pipeline.predict.StudentPredictor`) goes through ONNX Runtime when the folder has
``model.onnx`` (``--engine auto``, the default), on CPU; ``--engine torch`` keeps the torch model, which
a GPU (``--gpu``) and the encoder's embeddings (FreeAL's selection) need.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import types
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow.fs as pafs

from pipeline import model_store, storage
from pipeline.config import ConfigError, StorageConfig

ONNX_FILE = "model.onnx"
OPSET = 17
ENGINES = ("auto", "torch", "onnx")
# Texts the export checks the ONNX graph on, against the torch model: short and long, so that both axes vary.
PARITY_TEXTS = [
    "ok",
    "The results were better than expected, and the outlook for next year was raised.",
    "Could you tell me why my card payment was declined twice at the same shop yesterday evening?",
    "Terrible.",
]


class OnnxStudent:
    """Stands in for the Hugging Face model in prediction: called with ``input_ids`` and
    ``attention_mask`` (torch tensors), it returns an object whose ``logits`` ONNX Runtime computed."""

    def __init__(self, folder: str, threads: Optional[int] = None):
        import onnxruntime
        import torch
        from transformers import AutoConfig

        self.config = AutoConfig.from_pretrained(folder)
        self.device = torch.device("cpu")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(Path(folder) / ONNX_FILE), options,
                                                    providers=["CPUExecutionProvider"])

    def eval(self) -> "OnnxStudent":
        return self

    def __call__(self, input_ids: Any, attention_mask: Any, output_hidden_states: bool = False) -> Any:
        import torch

        if output_hidden_states:
            raise ValueError("an ONNX student gives logits only: the encoder's embeddings need the torch model "
                             "(predict with --engine torch)")
        logits = self.session.run(["logits"], {"input_ids": input_ids.cpu().numpy().astype(np.int64),
                                               "attention_mask": attention_mask.cpu().numpy().astype(np.int64)})[0]
        return types.SimpleNamespace(logits=torch.from_numpy(logits))


def resolve_engine(engine: str, meta: dict[str, Any], use_gpu: bool = False, embeddings: bool = False) -> str:
    """``torch`` or ``onnx``: what predicts with the exported model of ``meta``. ``auto`` is ONNX Runtime
    when the model has an ONNX export and neither a GPU nor the encoder's embeddings are asked for (ONNX
    Runtime serves logits, on CPU); asking for ``onnx`` where it cannot serve is an error."""
    if engine not in ENGINES:
        raise ConfigError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "onnx" and "onnx" not in meta:
        raise ConfigError(f"engine onnx: the model has no {ONNX_FILE}; make one with raydistill export-onnx")
    if engine == "onnx" and (use_gpu or embeddings):
        raise ConfigError("engine onnx: ONNX Runtime serves logits on CPU here; a GPU or the encoder's embeddings "
                          "need --engine torch (or auto)")
    if engine == "auto":
        return "onnx" if "onnx" in meta and not use_gpu and not embeddings else "torch"
    return engine


def load_for_inference(kind: Any, folder: str, meta: dict[str, Any], engine: str = "auto",
                       threads: Optional[int] = None) -> tuple[Any, Any]:
    """Tokenizer and model of the local model ``folder`` for prediction on CPU, by :func:`resolve_engine`:
    ONNX Runtime's, or the torch model."""
    if resolve_engine(engine, meta) == "torch":
        return kind.load_student(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), OnnxStudent(folder, threads)


def export_onnx(model_uri: str, storage_config: StorageConfig = StorageConfig(), *, output: Optional[str] = None,
                int8: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Add ``model.onnx`` to the exported model at ``model_uri`` (or a copy of it at ``output``) and
    publish it; returns what the model's ``raydistill.json`` now says of it under ``onnx``."""
    import torch

    from pipeline import tasks

    destination = output or model_uri
    with tempfile.TemporaryDirectory(prefix="raydistill-onnx-") as tmp:
        fetched = model_store.fetch(model_uri, storage_config, str(Path(tmp) / "fetched"))
        folder = Path(tmp) / "model"
        shutil.copytree(fetched, folder)  # a local model is fetched in place: it is changed only by publish
        meta = json.loads((folder / model_store.META).read_text())
        kind = tasks.for_model(meta)
        tokenizer, model = kind.load_student(str(folder))
        model.eval()
        sample = tokenizer(PARITY_TEXTS[:2], padding="longest", return_tensors="pt")
        exported = folder / ONNX_FILE
        torch.onnx.export(
            model, (sample["input_ids"], sample["attention_mask"]), str(exported),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "logits": {0: "batch"} | ({1: "sequence"} if kind.name == "spans" else {})},
            opset_version=OPSET, dynamo=False,
        )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = folder / "model.int8.onnx"
            quantize_dynamic(str(exported), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
            quantized.replace(exported)
        difference = parity(kind, model, tokenizer, str(folder), meta["max_length"], PARITY_TEXTS)
        log(f"[export-onnx] {ONNX_FILE}{' (int8)' if int8 else ''}: {exported.stat().st_size / 1e6:.1f} MB; "
            f"largest probability difference from the torch model on {len(PARITY_TEXTS)} texts: {difference:.2e}")
        meta.pop("files", None)
        meta["onnx"] = {"file": ONNX_FILE, "int8": int8, "opset": OPSET, "max_probability_difference": difference,
                        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        model_store.seal(folder, meta)
        out_fs, out_path = storage.resolve(destination, storage_config)
        model_store.publish(pafs.LocalFileSystem(), str(folder), out_fs, out_path)
    log(f"[export-onnx] published {destination}")
    return meta["onnx"]


def parity(kind: Any, model: Any, tokenizer: Any, folder: str, max_length: int, texts: list[str]) -> float:
    """The largest difference between the torch model's and the ONNX graph's probabilities on ``texts``
    (classification and multilabel: per class; spans: per token and tag)."""
    import torch

    onnx = OnnxStudent(folder)
    encoded = tokenizer(texts, max_length=max_length, truncation=True, padding="longest", return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    with torch.no_grad():
        reference = model(**inputs).logits.float()
    ours = onnx(**inputs).logits.float()
    if model.config.problem_type == "multi_label_classification":
        return float((reference.sigmoid() - ours.sigmoid()).abs().max())
    return float((reference.softmax(-1) - ours.softmax(-1)).abs().max())
