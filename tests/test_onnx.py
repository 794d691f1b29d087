"""ONNX export and ONNX Runtime prediction: the graph gives the torch model's probabilities on real texts,
for each task type, and the predict job serves through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import model_store, tasks
from pipeline.cli import main
from pipeline.config import StorageConfig, load_config, to_dict
from pipeline.errors import ConfigError
from pipeline.onnx_student import ONNX_FILE, OnnxStudent, load_for_inference, resolve_engine
from pipeline.predict import model_fingerprint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = {"classification": "banking_support.yaml", "multilabel": "wnut17_types.yaml", "spans": "wnut17_spans.yaml"}


def real_texts(config_name: str) -> list[str]:
    path = EXAMPLES.parent / load_config(EXAMPLES / config_name).data.input  # relative to the repository
    return [json.loads(line)["text"] for line in path.read_text().splitlines()[:40]]


@pytest.fixture(scope="module")
def base_student(tmp_path_factory):
    from pipeline.smoke import build_tiny_student

    texts = [t for name in CONFIGS.values() for t in real_texts(name)]
    return str(build_tiny_student(tmp_path_factory.mktemp("student"), texts))


def exported_model(folder: Path, base: str, type_name: str) -> tuple[Path, object]:
    """A model folder as the distillation job exports it, its weights made large so that probabilities
    are far from uniform and differ from text to text (a freshly initialised tiny model gives nearly the
    same ones for every text, where a wrong graph would hide)."""
    config = load_config(EXAMPLES / CONFIGS[type_name])
    kind = tasks.for_config(config)
    tokenizer, model = kind.load_student(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.3)
        model.classifier.weight.normal_(0, 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model_store.seal(folder, {"labels": config.task.label_names, "task": config.task.name, "task_type": kind.name,
                              "max_length": 64, "config": to_dict(config)})
    return folder, kind


@pytest.mark.parametrize("type_name", ["classification", "multilabel", "spans"])
def test_export_gives_the_torch_models_predictions_on_real_texts(tmp_path, base_student, type_name):
    folder, kind = exported_model(tmp_path / "model", base_student, type_name)
    before = json.loads((folder / model_store.META).read_text())
    assert main(["export-onnx", str(folder)]) == 0

    meta = json.loads((folder / model_store.META).read_text())
    assert meta["onnx"]["file"] == ONNX_FILE and meta["onnx"]["int8"] is False
    assert meta["onnx"]["max_probability_difference"] < 1e-4
    assert ONNX_FILE in meta["files"]  # sealed: the export is part of the checked model
    assert model_fingerprint(meta) != model_fingerprint(before)  # its predictions never join the torch model's
    model_store.fetch(str(folder), StorageConfig(), str(tmp_path / "unused"))  # the folder checks out whole

    texts = real_texts(CONFIGS[type_name])
    torch_tok, torch_model = load_for_inference(kind, str(folder), meta, "torch")
    onnx_tok, onnx_model = load_for_inference(kind, str(folder), meta, "auto")
    assert isinstance(onnx_model, OnnxStudent) and not isinstance(torch_model, OnnxStudent)
    if type_name == "spans":
        # Dynamic sequence axis: texts of every length in one call, the offsets and scores the same.
        reference = kind.predict(torch_model, torch_tok, texts, 64, batch_size=16)["spans"]
        ours = kind.predict(onnx_model, onnx_tok, texts, 64, batch_size=16)["spans"]
        assert [[(s["start"], s["end"], s["label"]) for s in row] for row in ours] == \
            [[(s["start"], s["end"], s["label"]) for s in row] for row in reference]
        assert sum(len(row) for row in reference) > 0
        return
    from pipeline.student import predict_proba

    reference = predict_proba(torch_model, torch_tok, texts, 64, batch_size=16)
    ours = predict_proba(onnx_model, onnx_tok, texts, 64, batch_size=16)
    assert reference.shape == ours.shape == (len(texts), len(kind.label_names))
    assert np.abs(reference - ours).max() < 1e-4
    # Far from uniform, and not the same for every text: the comparison can fail.
    assert reference.max() - reference.min() > 0.3 and reference.std(axis=0).max() > 0.05


def test_int8_export_stays_close_and_predict_serves_through_it(tmp_path, base_student, ray_cluster):
    from pipeline.predict import run_predict
    from pipeline.student import predict_proba

    folder, kind = exported_model(tmp_path / "model", base_student, "classification")
    texts = real_texts(CONFIGS["classification"])
    tokenizer, model = kind.load_student(str(folder))
    reference = predict_proba(model, tokenizer, texts, 64)
    copy = tmp_path / "int8"
    assert main(["export-onnx", str(folder), "--int8", "--output", str(copy)]) == 0
    assert not (folder / ONNX_FILE).exists()  # --output: a copy, the model itself unchanged
    meta = json.loads((copy / model_store.META).read_text())
    assert meta["onnx"]["int8"] is True
    import onnx

    weights = onnx.load(str(copy / ONNX_FILE)).graph.initializer
    int8_weights = [w for w in weights if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 2]
    assert len(int8_weights) >= 2 * 6  # each layer's six matrices (query, key, value, output, two feed-forward)
    tokenizer, onnx_model = load_for_inference(kind, str(copy), meta)
    quantised = predict_proba(onnx_model, tokenizer, texts, 64)
    assert_close_to_int8_tolerance(quantised, reference)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    report = run_predict(str(copy), str(corpus), str(tmp_path / "out"), commit_rows=16, log=lambda _: None)
    assert report["engine"] == "onnx" and report["rows"]["predicted"] == len(texts)
    table = pq.read_table(tmp_path / "out" / "data").to_pydict()
    served = np.array([dict(zip(table["id"], table["probabilities"]))[f"r{i}"] for i in range(len(texts))])
    # Dynamic quantisation scales activations per batch: batched otherwise, a text's probabilities move a
    # little, within the int8 model's tolerance.
    assert_close_to_int8_tolerance(served, reference)
    torch_report = run_predict(str(copy), str(corpus), str(tmp_path / "out-torch"), engine="torch",
                               log=lambda _: None)
    assert torch_report["engine"] == "torch"


def assert_close_to_int8_tolerance(quantised: np.ndarray, reference: np.ndarray) -> None:
    """Int8 weights of a tiny model whose weights were inflated: single probabilities may move by 0.1 or
    more (the tiny model differs from one process to the next), but on average they stay close and the
    predicted label rarely changes. A wrong graph moves them by tenths on average."""
    assert np.abs(quantised - reference).mean() < 0.02  # measured 0.004 to 0.006 over six such models
    assert (quantised.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.8  # measured 0.925 to 1.0


def test_engine_onnx_without_an_export_is_refused(tmp_path, base_student):
    folder, kind = exported_model(tmp_path / "model", base_student, "classification")
    meta = json.loads((folder / model_store.META).read_text())
    with pytest.raises(ConfigError, match="engine onnx: the model has no model.onnx; make one with raydistill export-onnx"):
        load_for_inference(kind, str(folder), meta, "onnx")
    with pytest.raises(ConfigError, match="engine: must be one of auto, torch, onnx, got 'tensorrt'"):
        load_for_inference(kind, str(folder), meta, "tensorrt")
    assert not isinstance(load_for_inference(kind, str(folder), meta, "auto")[1], OnnxStudent)
    # With an export: a GPU or the encoder's embeddings keep torch under auto, and cannot have onnx.
    exported = {**meta, "onnx": {"file": ONNX_FILE}}
    assert resolve_engine("auto", exported) == "onnx"
    assert resolve_engine("auto", exported, use_gpu=True) == resolve_engine("auto", exported, embeddings=True) == "torch"
    with pytest.raises(ConfigError, match="engine onnx: ONNX Runtime serves logits on CPU here"):
        resolve_engine("onnx", exported, use_gpu=True)


def test_onnx_student_refuses_embeddings(tmp_path, base_student):
    folder, kind = exported_model(tmp_path / "model", base_student, "classification")
    main(["export-onnx", str(folder)])
    onnx = OnnxStudent(str(folder))
    ids = torch.ones((1, 4), dtype=torch.int64)
    with pytest.raises(ValueError, match="embeddings need the torch model"):
        onnx(ids, ids, output_hidden_states=True)
