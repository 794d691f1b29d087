"""FreeAL's ``select`` step, streamed: the driver's memory does not grow with the labelled rows.

What it decides is described in :mod:`pipeline.freeal_steps` and :mod:`pipeline.freeal`: per class,
the rows the warm-up student fits with a small loss are clean, the rest noisy; clean rows (and
noisy ones the student is sure of, with its own label) train the round's student; noisy rows (and
the teacher's abstentions) are relabelled, each with the demos nearest to it.

How, over Ray Data, every pass reading ``selection/scored/`` (deleted at the end):

1. **score**: an actor pool of the warm-up student (``distill.num_workers`` actors, a GPU each
   with ``distill.use_gpu``) writes, per block, each row's class, loss, order key (loss, then
   id hash), the student's label and confidence, and its embedding as float16.
2. **split**: per class, the count, min, max, mean and variance of the losses, then a histogram
   of 65,536 equal bins from min to max. ``gmm`` fits the two-component mixture to the histogram
   (each bin's rows at its centre: off by at most 1/131,072 of the class's loss range);
   ``fraction`` (and the classes a mixture cannot fit) finds the key of the class's k-th lowest
   loss by counting 16-bit digits of the keys, one pass each (two for distinct losses).
3. **pool**: per class, the ``freeal_demo_pool`` lowest-loss clean rows (each block sends its own
   few, the driver keeps the best); the diverse demos are picked from them.
4. **write**: each block's clean and pseudo-labelled rows go to ``student_data/data/``, its noisy
   and abstained rows with their demos to ``relabel_input/``, one file per block named by its ids;
   the block returns its counts.

The driver holds per-class summaries, histograms and demo pools: bounded by the number of classes.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas, storage
from pipeline.cluster import init_ray
from pipeline.committed import shard_name
from pipeline.config import Config, TaskConfig
from pipeline.evaluate import load_gold
from pipeline.freeal import (DIGIT_BITS, TOP_SHIFT, diverse_demos, fit_mixture, from_sortable_bits, key_ceiling,
                             low_component_mask, nearest_demos, next_digit, order_keys)
from pipeline.predict import StudentPredictor
from pipeline.round_steps import labelled_rows
from pipeline.rounds_layout import RoundsLayout, labels_uri, warmup_uri

RELABEL_INPUT = pa.schema([("id", pa.string()), ("text", pa.string()), ("demos", pa.string())])
ABSTAINED = -1  # the class of a row the teacher gave no label


def run_select(config: Config, r: int, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.time()
    rounds, names = config.rounds, config.task.label_names
    layout = RoundsLayout.of(config)
    folder = layout.round_dir(r, "selection")
    storage.delete_dir(layout.fs, layout.path(*folder))
    fs, root = storage.resolve(labels_uri(config, r), config.storage)
    labelled_files = storage.list_files(fs, storage.join(root, "data"), (".parquet",))
    warm_fs, warm_root = storage.resolve(warmup_uri(config, r), config.storage)
    model = storage.read_json(warm_fs, storage.join(warm_root, "report.json"))["model"]
    init_ray()

    scored_path = layout.path(*folder, "scored")
    _score(config, model, fs, labelled_files, layout.fs, scored_path)
    scored = Scored(layout.fs, storage.list_files(layout.fs, scored_path, (".parquet",)))
    stats = scored.class_stats(len(names))
    rules = split_rules(scored, stats, rounds.freeal_split, rounds.freeal_clean_fraction)
    pool = scored.demo_pool(rules, rounds.freeal_demo_pool)
    demos = choose_demos(pool, names, rounds.freeal_demos_per_class)
    gold = _gold(config)
    totals = scored.write(
        rules, {"demos": demos, "gold": gold}, task=config.task, teacher_model=config.teacher.model, r=r,
        pseudo_confidence=rounds.freeal_pseudo_confidence, neighbours=rounds.freeal_neighbours, out_fs=layout.fs,
        student_path=layout.path(*folder, "student_data", "data"), relabel_path=layout.path(*folder, "relabel_input"))
    if not totals["student_rows"]:  # the distillation job reads a folder: it must hold the schema
        storage.write_parquet_atomic(layout.fs, layout.path(*folder, "student_data", "data", "part-0.parquet"),
                                     schemas.LABELLED.empty_table())
    if not totals["to_relabel"]:
        storage.write_parquet_atomic(layout.fs, layout.path(*folder, "relabel_input", "part-0.parquet"),
                                     RELABEL_INPUT.empty_table())
    storage.write_json(layout.fs, layout.path(*folder, "student_data", "manifest.json"),
                       {"labels": names, "freeal_selection": True})
    storage.delete_dir(layout.fs, scored_path)

    clean, noisy = totals["clean"], totals["noisy"]
    without = [names[c] for c in range(len(names)) if not demos["per_class"][c]]
    report = {
        "step": "select",
        "round": r,
        "labelled_rows": int(stats["rows"].sum()),
        "abstained_rows": totals["abstained"],
        "clean": int(clean.sum()),
        "noisy": int(noisy.sum()),
        "pseudo_labelled": totals["pseudo"],
        "student_rows": totals["student_rows"],
        "to_relabel": totals["to_relabel"],
        "per_class": {name: {"clean": int(clean[c]), "noisy": int(noisy[c]), "demos": len(demos["per_class"][c]),
                             **({"split": describe_rule(rules[c])} if c in rules else {})}
                      for c, name in enumerate(names)},
        "classes_without_clean_rows": without,
        "split": {"method": rounds.freeal_split, "fraction": rounds.freeal_clean_fraction},
        "teacher_accuracy": _accuracy(totals["gold"]) if gold is not None else None,
        "wall_seconds": round(time.time() - started, 2),
    }
    if without:
        log(f"[freeal] round {r}: no clean rows for {without}; their noisy rows get the nearest demos of the "
            "other classes")
    storage.write_json(layout.fs, layout.path(*folder, "report.json"), report)
    log(f"[freeal] round {r}: {report['clean']} clean, {report['noisy']} noisy ({report['pseudo_labelled']} "
        f"pseudo-labelled), {report['to_relabel']} to relabel")
    return report


# -- 1. score ---------------------------------------------------------------------------------------


class Scorer(StudentPredictor):
    """Ray Data actor: the warm-up student's loss, label, confidence and float16 embedding for each
    labelled row, written under ``out_path`` as one file per block; returns the block's row count."""

    def __init__(self, names: list[str], out_fs: Any, out_path: str, **kwargs: Any):
        super().__init__(embeddings=True, **kwargs)
        if self.labels != names:
            raise ValueError(f"the warm-up student's labels {self.labels} are not the task's {names}")
        self.index = {name: i for i, name in enumerate(names)}
        self.out_fs, self.out_path = out_fs, out_path

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.idindex import hash_ids
        from pipeline.student import predict_with_embeddings

        texts = batch.column("text").to_pylist()
        classes = np.array([ABSTAINED if label is None else self._class(label, row_id) for label, row_id in
                            zip(batch.column("hard_label").to_pylist(), batch.column("id").to_pylist())],
                           dtype=np.int16)
        probabilities, embeddings = predict_with_embeddings(self.model, self.tokenizer, texts, self.max_length,
                                                            self.batch_size, embeddings=True)
        labelled = classes >= 0
        losses = np.full(len(texts), np.nan, dtype=np.float32)
        rows = np.flatnonzero(labelled)
        losses[rows] = -np.log(np.clip(probabilities[rows, classes[rows]], 1e-12, None))
        width = embeddings.shape[1] if len(texts) else 1
        table = pa.table({
            "id": batch.column("id"), "text": batch.column("text"), "class": pa.array(classes, pa.int16()),
            "loss": pa.array(losses, pa.float32()),
            "order": pa.array(order_keys(np.nan_to_num(losses, nan=np.inf), hash_ids(batch.column("id"))),
                              pa.uint64()),
            "predicted": pa.array(probabilities.argmax(axis=1).astype(np.int16), pa.int16()),
            "confidence": pa.array(probabilities.max(axis=1).astype(np.float32), pa.float32()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(embeddings.astype(np.float16).reshape(-1)), width),
        })
        if table.num_rows:
            storage.write_parquet_atomic(self.out_fs, storage.join(self.out_path,
                                                                   shard_name(batch.column("id").to_pylist())), table)
        return pa.table({"rows": pa.array([table.num_rows], pa.int64())})

    def _class(self, label: str, row_id: str) -> int:
        if label not in self.index:
            raise ValueError(f"labelled row {row_id!r}: hard_label {label!r} is not one of the task's labels")
        return self.index[label]


def _score_actors(config: Config) -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("GPU", 0))) if config.distill.use_gpu else 2


def _score(config: Config, model: str, fs: Any, files: list[str], out_fs: Any, out_path: str) -> int:
    import ray.data

    if not files:
        return 0
    scored = ray.data.read_parquet(files, filesystem=fs).select_columns(["id", "text", "hard_label"]).map_batches(
        Scorer, fn_constructor_kwargs={"names": config.task.label_names, "out_fs": out_fs, "out_path": out_path,
                                       "model_dir": model, "storage_config": config.storage,
                                       "use_gpu": config.distill.use_gpu},
        batch_size=1024, batch_format="pyarrow",
        # Grown up to num_workers (unset: the cluster's GPUs, or 2 on CPU) as resources allow: a fixed pool
        # could take every CPU from the reads.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.distill.num_workers or _score_actors(config)),
        num_gpus=1 if config.distill.use_gpu else 0)
    return sum(sum(b.column("rows").to_pylist()) for b in scored.iter_batches(batch_format="pyarrow",
                                                                              batch_size=None))


# -- 2. split ---------------------------------------------------------------------------------------


class Scored:
    """The scored rows under ``selection/scored/``, and the passes over them."""

    def __init__(self, fs: Any, files: list[str]):
        self.fs, self.files = fs, files

    def _map(self, fn: Callable[..., pa.Table], columns: Optional[list[str]], **kwargs: Any):
        import ray.data

        if not self.files:
            return
        read = ray.data.read_parquet(self.files, filesystem=self.fs)
        mapped = (read.select_columns(columns) if columns else read).map_batches(fn, batch_format="pyarrow",
                                                                                 fn_kwargs=kwargs)
        yield from mapped.iter_batches(batch_format="pyarrow", batch_size=None)

    def class_stats(self, n_classes: int) -> dict[str, Any]:
        """Per class: rows, min, max, sum and sum of squares of the losses."""
        stats = {"rows": np.zeros(n_classes, np.int64), "min": np.full(n_classes, np.inf),
                 "max": np.full(n_classes, -np.inf), "sum": np.zeros(n_classes), "sumsq": np.zeros(n_classes)}
        for batch in self._map(_stats_batch, ["class", "loss"]):
            for row in batch.to_pylist():
                c = row["class"]
                stats["rows"][c] += row["rows"]
                stats["min"][c] = min(stats["min"][c], row["min"])
                stats["max"][c] = max(stats["max"][c], row["max"])
                stats["sum"][c] += row["sum"]
                stats["sumsq"][c] += row["sumsq"]
        return stats

    def histograms(self, ranges: dict[int, tuple[float, float]]) -> dict[int, np.ndarray]:
        """Per class, the counts of its losses in ``HISTOGRAM_BINS`` equal bins over ``ranges[c]``."""
        return self._counts(_histogram_batch, "loss", "bin", HISTOGRAM_BINS, list(ranges), ranges=ranges)

    def _counts(self, fn: Callable[..., pa.Table], column: str, key: str, size: int, classes: list[int],
                **kwargs: Any) -> dict[int, np.ndarray]:
        """Per class, a dense array of ``size`` counts, summed from the (class, ``key``, count) rows the
        blocks return: what the driver holds is bounded by the classes, not the rows."""
        counts = {c: np.zeros(size, np.int64) for c in classes}
        for batch in self._map(fn, ["class", column], **kwargs):
            cls, at, n = (batch.column(k).to_numpy() for k in ("class", key, "count"))
            for c in np.unique(cls):
                mine = cls == c
                np.add.at(counts[int(c)], at[mine], n[mine])
        return counts

    def kth_keys(self, need: dict[int, int]) -> dict[int, int]:
        """For each class ``c``, the order key of its ``need[c]``-th lowest row (one pass per 16 bits
        of the key until each class's key is settled)."""
        searching = {c: (0, k) for c, k in need.items()}
        found: dict[int, int] = {}
        for shift in range(TOP_SHIFT, -1, -DIGIT_BITS):
            if not searching:
                break
            prefixes = {c: prefix for c, (prefix, _) in searching.items()}
            counts = self._counts(_digits_batch, "order", "digit", 1 << DIGIT_BITS, list(searching),
                                  prefixes=prefixes, shift=shift)
            for c, (prefix, k) in list(searching.items()):
                digits = np.flatnonzero(counts[c])
                prefix, k, done = next_digit(prefix, k, shift, digits, counts[c][digits])
                if done:
                    found[c] = key_ceiling(prefix, shift)
                    del searching[c]
                else:
                    searching[c] = (prefix, k)
        return found

    def demo_pool(self, rules: dict[int, dict[str, Any]], size: int) -> dict[int, pa.Table]:
        """Per class, its ``size`` lowest-loss clean rows (id, text, loss, order, embedding), by order key."""
        pool: dict[int, pa.Table] = {}
        for batch in self._map(_pool_batch, ["id", "text", "class", "loss", "order", "embedding"], rules=rules,
                               size=size):
            for c in set(batch.column("class").to_pylist()):
                rows = batch.filter(pc.equal(batch.column("class"), c))
                if c in pool:
                    rows = pa.concat_tables([pool[c], rows])
                pool[c] = rows.sort_by("order").slice(0, size)
        return pool

    def write(self, rules: dict[int, dict[str, Any]], shared: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Every block's student rows and relabelling rows written; the blocks' counts summed. ``shared``
        (the demos, the gold labels) goes to the object store once."""
        import ray

        n = len(shared["demos"]["per_class"])
        totals: dict[str, Any] = {"clean": np.zeros(n, np.int64), "noisy": np.zeros(n, np.int64), "pseudo": 0,
                                  "abstained": 0, "student_rows": 0, "to_relabel": 0, "gold": np.zeros(6, np.int64)}
        for batch in self._map(_write_batch, None, rules=rules, shared=ray.put(shared), **kwargs):
            for row in batch.to_pylist():
                totals["clean"] += row["clean"]
                totals["noisy"] += row["noisy"]
                totals["gold"] += row["gold"]
                for key in ("pseudo", "abstained", "student_rows", "to_relabel"):
                    totals[key] += row[key]
        return totals


HISTOGRAM_BINS = 1 << 16


def _stats_batch(batch: pa.Table) -> pa.Table:
    classes = batch.column("class").to_numpy()
    losses = batch.column("loss").to_numpy().astype(float)
    rows = []
    for c in np.unique(classes[classes >= 0]):
        x = losses[classes == c]
        rows.append({"class": int(c), "rows": len(x), "min": float(x.min()), "max": float(x.max()),
                     "sum": float(x.sum()), "sumsq": float((x * x).sum())})
    return pa.Table.from_pylist(rows, schema=_STATS)


_STATS = pa.schema([("class", pa.int64()), ("rows", pa.int64()), ("min", pa.float64()), ("max", pa.float64()),
                    ("sum", pa.float64()), ("sumsq", pa.float64())])


def _bins(losses: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(((losses - low) / (high - low) * HISTOGRAM_BINS).astype(np.int64), 0, HISTOGRAM_BINS - 1)


def _histogram_batch(batch: pa.Table, ranges: dict[int, tuple[float, float]]) -> pa.Table:
    classes = batch.column("class").to_numpy()
    losses = batch.column("loss").to_numpy().astype(float)
    out: dict[str, list[int]] = {"class": [], "bin": [], "count": []}
    for c, (low, high) in ranges.items():
        bins, counts = np.unique(_bins(losses[classes == c], low, high), return_counts=True)
        out["class"] += [c] * len(bins)
        out["bin"] += bins.tolist()
        out["count"] += counts.tolist()
    return pa.table({k: pa.array(v, pa.int64()) for k, v in out.items()})


def _digits_batch(batch: pa.Table, prefixes: dict[int, int], shift: int) -> pa.Table:
    classes = batch.column("class").to_numpy()
    order = batch.column("order").to_numpy()
    above = np.uint64(((1 << 64) - 1) ^ ((1 << (shift + DIGIT_BITS)) - 1)) if shift + DIGIT_BITS < 64 \
        else np.uint64(0)
    out: dict[str, list[int]] = {"class": [], "digit": [], "count": []}
    for c, prefix in prefixes.items():
        mine = (classes == c) & ((order & above) == (np.uint64(prefix) & above))
        digits, counts = np.unique((order[mine] >> np.uint64(shift)) & np.uint64(0xFFFF), return_counts=True)
        out["class"] += [c] * len(digits)
        out["digit"] += digits.astype(np.int64).tolist()
        out["count"] += counts.tolist()
    return pa.table({k: pa.array(v, pa.int64()) for k, v in out.items()})


def split_rules(scored: Scored, stats: dict[str, Any], method: str, fraction: float) -> dict[int, dict[str, Any]]:
    """Per class with rows, how its clean rows are told: ``{"mixture": ...}`` (a row is clean where the
    low-loss component is likelier) or ``{"max_order": key}`` (its rows up to that order key)."""
    rules: dict[int, dict[str, Any]] = {}
    need: dict[int, int] = {}
    fitted: dict[int, tuple[float, float]] = {}
    for c, n in enumerate(stats["rows"].tolist()):
        if n == 0:
            continue
        if method == "gmm" and n >= 4 and stats["max"][c] > stats["min"][c]:
            fitted[c] = (float(stats["min"][c]), float(stats["max"][c]))
        else:  # the fraction rule, also for classes a mixture cannot fit (too few rows, no spread)
            need[c] = math.ceil(fraction * n)
    for c, hist in (scored.histograms(fitted) if fitted else {}).items():
        low, high = fitted[c]
        n = stats["rows"][c]
        mean = stats["sum"][c] / n
        var = max(stats["sumsq"][c] / n - mean * mean, 0.0)
        bins = np.flatnonzero(hist)
        centres = low + (bins + 0.5) * (high - low) / HISTOGRAM_BINS
        rules[c] = {"mixture": fit_mixture(centres, hist[bins], start=(low, high, var))}
    for c, key in scored.kth_keys(need).items():
        rules[c] = {"max_order": key}
    return rules


def describe_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A class's split as the report shows it."""
    if "mixture" in rule:
        return {"rule": "gmm", **{k: [round(v, 6) for v in values] for k, values in rule["mixture"].items()}}
    top = np.array([rule["max_order"] >> 32], dtype=np.uint32)
    return {"rule": "fraction", "max_loss": round(float(from_sortable_bits(top)[0]), 6)}


def clean_mask(rules: dict[int, dict[str, Any]], classes: np.ndarray, losses: np.ndarray,
               order: np.ndarray) -> np.ndarray:
    clean = np.zeros(len(classes), dtype=bool)
    for c, rule in rules.items():
        mine = np.flatnonzero(classes == c)
        if not len(mine):
            continue
        if "mixture" in rule:
            clean[mine] = low_component_mask(losses[mine].astype(float), rule["mixture"])
        else:
            clean[mine] = order[mine] <= np.uint64(rule["max_order"])
    return clean


# -- 3. pool and demos ------------------------------------------------------------------------------


def _pool_batch(batch: pa.Table, rules: dict[int, dict[str, Any]], size: int) -> pa.Table:
    classes = batch.column("class").to_numpy()
    order = batch.column("order").to_numpy()
    clean = clean_mask(rules, classes, batch.column("loss").to_numpy(), order)
    keep = []
    for c in np.unique(classes[clean]):
        rows = np.flatnonzero(clean & (classes == c))
        keep += rows[np.argsort(order[rows], kind="stable")[:size]].tolist()
    return batch.take(pa.array(sorted(keep), pa.int64()))


def choose_demos(pool: dict[int, pa.Table], names: list[str], per_class: int) -> dict[str, Any]:
    """The diverse demos of each class from its pool, with their unit embeddings (class order, then
    the order chosen), and the demos an abstained row gets: one of each class in turn."""
    texts, labels, vectors, per_class_rows = [], [], [], []
    for c in range(len(names)):
        rows = pool.get(c)
        if rows is None or not rows.num_rows:
            per_class_rows.append([])
            continue
        embeddings = _embeddings(rows)
        chosen, _ = diverse_demos(embeddings, rows.column("loss").to_numpy(), np.zeros(rows.num_rows, int),
                                  np.ones(rows.num_rows, bool), per_class, rows.num_rows)
        picks = chosen.get(0, [])
        per_class_rows.append(list(range(len(texts), len(texts) + len(picks))))
        texts += [rows.column("text")[i].as_py() for i in picks]
        labels += [names[c]] * len(picks)
        vectors += [embeddings[i] for i in picks]
    turns = [rows for rows in per_class_rows if rows]
    mixed = [rows[i] for i in range(max(map(len, turns), default=0)) for rows in turns if i < len(rows)]
    return {"texts": texts, "labels": labels, "per_class": per_class_rows, "mixed": mixed,
            "embeddings": np.array(vectors, dtype=np.float32) if vectors else np.zeros((0, 1), np.float32)}


def _embeddings(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


# -- 4. write ---------------------------------------------------------------------------------------


def _write_batch(batch: pa.Table, rules: dict[int, dict[str, Any]], shared: Any, task: TaskConfig,
                 teacher_model: str, r: int, pseudo_confidence: float, neighbours: int, out_fs: Any,
                 student_path: str, relabel_path: str) -> pa.Table:
    from pipeline.idindex import Loaded

    demos, gold = Loaded.get(shared)["demos"], Loaded.get(shared)["gold"]
    names = task.label_names
    classes = batch.column("class").to_numpy().astype(np.int64)
    confidence = batch.column("confidence").to_numpy()
    predicted = batch.column("predicted").to_numpy().astype(np.int64)
    labelled = classes >= 0
    clean = clean_mask(rules, classes, batch.column("loss").to_numpy(), batch.column("order").to_numpy())
    noisy = labelled & ~clean
    pseudo = noisy & (confidence >= pseudo_confidence)
    ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
    fs = out_fs

    # ids follow the labelling job's, so a text that occurs twice keeps two rows
    kept = np.concatenate([np.flatnonzero(clean), np.flatnonzero(pseudo)])
    train = [{"text": texts[i], "label": names[classes[i]], "source": "clean", "prompt_tokens": 0,
              "completion_tokens": 0} for i in np.flatnonzero(clean)]
    train += [{"text": texts[i], "label": names[predicted[i]], "source": "student pseudo-label", "prompt_tokens": 0,
               "completion_tokens": 0} for i in np.flatnonzero(pseudo)]
    if train:
        table = labelled_rows(train, task, teacher_model, f"freeal-r{r}", ids=[ids[i] for i in kept],
                              rationale=f"FreeAL round {r} selection: {{source}}")
        storage.write_parquet_atomic(fs, storage.join(student_path, shard_name(table.column("id").to_pylist())),
                                     table)

    relabel_rows = np.flatnonzero(noisy | ~labelled)
    if len(relabel_rows):
        per_row = _relabel_demos(batch, relabel_rows, labelled, demos, neighbours)
        table = pa.table({"id": [ids[i] for i in relabel_rows], "text": [texts[i] for i in relabel_rows],
                          "demos": per_row}, schema=RELABEL_INPUT)
        storage.write_parquet_atomic(fs, storage.join(relabel_path, shard_name(table.column("id").to_pylist())),
                                     table)

    n = len(names)
    return pa.table({
        "clean": [np.bincount(classes[clean], minlength=n).tolist()],
        "noisy": [np.bincount(classes[noisy], minlength=n).tolist()],
        "pseudo": [int(pseudo.sum())], "abstained": [int((~labelled).sum())], "student_rows": [len(train)],
        "to_relabel": [len(relabel_rows)], "gold": [_gold_counts(gold, texts, classes, clean, names)],
    })


def _relabel_demos(batch: pa.Table, rows: np.ndarray, labelled: np.ndarray, demos: dict[str, Any],
                   neighbours: int) -> list[str]:
    """Each noisy row's ``neighbours`` nearest demos (cosine); an abstained row's, demos of every class."""
    def as_json(picks: Any) -> str:
        return json.dumps([{"text": demos["texts"][j], "label": demos["labels"][j]} for j in picks],
                          ensure_ascii=False)

    out = [""] * len(rows)
    noisy = [k for k, i in enumerate(rows) if labelled[i]]
    if noisy and len(demos["texts"]):
        queries = _embeddings(batch.take(pa.array(rows[noisy], pa.int64())))
        for k, near in zip(noisy, nearest_demos(queries, demos["embeddings"], neighbours)):
            out[k] = as_json(near)
    fallback = as_json(demos["mixed"][:neighbours])
    return [text or fallback for text in out]


# -- the teacher's accuracy against freeal_gold ------------------------------------------------------


def _gold(config: Config) -> Optional[dict[str, str]]:
    if not config.rounds.freeal_gold:
        return None
    names = config.task.label_names
    texts, labels = load_gold(config.rounds.freeal_gold, names, "rounds.freeal_gold", config.storage)
    return {text: names[label] for text, label in zip(texts, labels)}


def _gold_counts(gold: Optional[dict[str, str]], texts: list[str], classes: np.ndarray, clean: np.ndarray,
                 names: list[str]) -> list[int]:
    """matched, right, matched clean, right clean, matched noisy, right noisy (labelled rows only)."""
    counts = [0] * 6
    if gold is None:
        return counts
    for text, c, is_clean in zip(texts, classes.tolist(), clean.tolist()):
        if c < 0 or text not in gold:
            continue
        right = int(names[c] == gold[text])
        part = 2 if is_clean else 4
        counts[0] += 1
        counts[1] += right
        counts[part] += 1
        counts[part + 1] += right
    return counts


def _accuracy(counts: np.ndarray) -> dict[str, Any]:
    matched, right, clean, clean_right, noisy, noisy_right = (int(x) for x in counts)
    return {
        "matched_rows": matched,
        "accuracy": right / matched if matched else None,
        "clean_accuracy": clean_right / clean if clean else None,
        "noisy_accuracy": noisy_right / noisy if noisy else None,
    }
