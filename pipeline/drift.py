"""The drift report of a retraining run: is the new data like the old, and does the student still follow the teacher?

Three views, as JSON (``drift.json``) and one PNG (``drift.png``) in the run's folder:

- **label distribution** of the new partitions' teacher labels against the earlier partitions':
  the share of each label, the total variation distance ``TV = 1/2 sum_c |p_c - q_c|`` and the
  population stability index ``PSI = sum_c (p_c - q_c) ln(p_c / q_c)`` (shares floored at 1e-4);
  a PSI above 0.2 is the usual "the population moved" line;
- **the teacher over time**, one point per partition: rows, abstention rate (no valid vote), mean
  consistency (share of the k votes that agree with the majority) and the share of unanimous rows;
- **student-teacher agreement** on the new texts: the share of the first ``retrain.agreement_rows``
  labelled new texts (teacher not abstaining) where the student's prediction is the teacher's label
  exactly, for the candidate and for the production model it would replace. Predicted by student
  replicas in Ray Data; the driver adds up two counts per batch.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from pipeline.config import StorageConfig

SHARE_FLOOR = 1e-4
PSI_ALERT = 0.2


def partition_summary(name: str, report: dict[str, Any]) -> dict[str, Any]:
    """The teacher's figures for one partition, from its labelling report (``report.json``)."""
    rows = report["rows"]["labelled_total"]
    histogram = report.get("consistency_histogram", {})
    return {
        "partition": name,
        "rows": rows,
        "abstention_rate": round(report["rows"]["abstained"] / rows, 4) if rows else None,
        "mean_consistency": report.get("mean_consistency"),
        "unanimous_share": round(histogram.get("1.0", 0) / rows, 4) if rows else None,
        "label_distribution": report["label_distribution"],
    }


def shares(counts: dict[str, int], labels: list[str]) -> dict[str, float]:
    total = sum(counts.get(label, 0) for label in labels)
    return {label: (counts.get(label, 0) / total if total else 0.0) for label in labels}


def distribution_shift(new: dict[str, int], earlier: dict[str, int], labels: list[str]) -> dict[str, Any]:
    """Shares of each label in ``new`` and ``earlier`` counts, their TV distance and PSI (see the module)."""
    p, q = shares(new, labels), shares(earlier, labels)
    tv = 0.5 * sum(abs(p[c] - q[c]) for c in labels)
    psi = 0.0
    for c in labels:
        a, b = max(p[c], SHARE_FLOOR), max(q[c], SHARE_FLOOR)
        psi += (a - b) * math.log(a / b)
    moved = max(labels, key=lambda c: abs(p[c] - q[c]))
    return {
        "new": {c: round(p[c], 4) for c in labels},
        "earlier": {c: round(q[c], 4) for c in labels},
        "total_variation": round(tv, 4),
        "psi": round(psi, 4),
        "psi_alert": psi > PSI_ALERT if sum(earlier.values()) else None,
        "largest_change": {"label": moved, "new": round(p[moved], 4), "earlier": round(q[moved], 4)},
    }


class AgreementCounter:
    """Ray Data actor: the student's predictions on labelled rows, compared with the teacher's; returns
    ``rows`` (with a teacher label) and ``agree`` per batch."""

    def __init__(self, model_uri: str, storage_config: StorageConfig, use_gpu: bool = False, batch_size: int = 64):
        from pipeline.predict import StudentPredictor

        self.predictor = StudentPredictor(model_uri, storage_config, use_gpu=use_gpu, batch_size=batch_size)

    def __call__(self, batch: pa.Table) -> pa.Table:
        p = self.predictor
        targets = p.kind.teacher_targets(batch)
        predictions = p.kind.predict(p.model, p.tokenizer, batch.column("text").to_pylist(), p.max_length, p.batch_size)
        agree = p.kind.agreement(targets, predictions)
        return pa.table({"rows": [len(agree)], "agree": [int(agree.sum())]})


def _answered(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.greater(batch.column("n_valid"), 0))


def student_agreement(model_uri: str, label_uris: list[str], kind: Any, storage_config: StorageConfig,
                      max_rows: int, use_gpu: bool = False) -> dict[str, Any]:
    """Agreement of the student at ``model_uri`` with the teacher on the first ``max_rows`` answered rows
    of the labelled outputs ``label_uris``; one student replica (on a GPU with ``use_gpu``)."""
    import ray.data
    from ray.data import ActorPoolStrategy

    columns = ["text", "n_valid", *(field.name for field in kind.label_fields())]
    parts = []
    for uri in label_uris:
        fs, root = storage.resolve(uri, storage_config)
        files = storage.list_files(fs, storage.join(root, "data"), (".parquet",))
        if files:
            parts.append(ray.data.read_parquet(files, filesystem=fs, columns=columns))
    if not parts:
        return {"rows": 0, "agree": 0, "agreement": None}
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    counts = (ds.map_batches(_answered, batch_format="pyarrow").limit(max_rows)
              .map_batches(AgreementCounter, fn_constructor_kwargs={"model_uri": model_uri,
                                                                    "storage_config": storage_config,
                                                                    "use_gpu": use_gpu},
                           batch_size=1024, batch_format="pyarrow", compute=ActorPoolStrategy(size=1),
                           num_gpus=1 if use_gpu else 0))
    rows = agree = 0
    for batch in counts.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += pc.sum(batch.column("rows")).as_py() or 0
        agree += pc.sum(batch.column("agree")).as_py() or 0
    return {"rows": rows, "agree": agree, "agreement": round(agree / rows, 4) if rows else None}


def drift_report(labels: list[str], new: list[dict[str, Any]], earlier: list[dict[str, Any]],
                 agreement: dict[str, Optional[dict[str, Any]]]) -> dict[str, Any]:
    """The report from the partitions' summaries (:func:`partition_summary`) and the agreements."""

    def summed(parts: list[dict[str, Any]]) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in parts:
            for label, n in part["label_distribution"].items():
                total[label] = total.get(label, 0) + n
        return total

    return {
        "new_partitions": [part["partition"] for part in new],
        "earlier_partitions": [part["partition"] for part in earlier],
        "label_distribution": distribution_shift(summed(new), summed(earlier), labels),
        "teacher_over_time": [{key: value for key, value in part.items() if key != "label_distribution"}
                              for part in earlier + new],
        "student_teacher_agreement": agreement,
    }


def drift_png(report: dict[str, Any]) -> bytes:
    """Three panels: label shares new vs earlier; abstention and consistency per partition; agreement."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    dist = report["label_distribution"]
    labels = list(dist["new"])
    x = np.arange(len(labels))
    axes[0].bar(x - 0.2, [dist["earlier"][c] for c in labels], 0.4, label="earlier")
    axes[0].bar(x + 0.2, [dist["new"][c] for c in labels], 0.4, label="new")
    axes[0].set_xticks(x, labels, rotation=60, ha="right", fontsize=7 if len(labels) > 10 else 9)
    axes[0].set_ylabel("share of teacher labels")
    axes[0].set_title(f"label distribution (TV {dist['total_variation']:.3f}, PSI {dist['psi']:.3f})")
    axes[0].legend()

    periods = report["teacher_over_time"]
    names = [p["partition"] for p in periods]
    for key, style in (("abstention_rate", "o-"), ("mean_consistency", "s-"), ("unanimous_share", "^-")):
        values = [np.nan if p.get(key) is None else p[key] for p in periods]
        axes[1].plot(range(len(names)), values, style, label=key.replace("_", " "))
    axes[1].set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("the teacher per partition")
    axes[1].legend(fontsize=8)

    agreement = {name: a["agreement"] for name, a in report["student_teacher_agreement"].items()
                 if a and a.get("agreement") is not None}
    axes[2].bar(list(agreement), list(agreement.values()), color=["tab:green", "tab:gray"][:len(agreement)])
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("student-teacher agreement, new texts")
    for i, value in enumerate(agreement.values()):
        axes[2].text(i, value + 0.02, f"{value:.3f}", ha="center")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()
