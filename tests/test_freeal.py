"""FreeAL's student-side choices on hand-checked cases."""

import numpy as np
import pytest

from pipeline.freeal import diverse_demos, nearest_demos, small_loss_split


def test_fraction_split_keeps_the_lowest_losses_of_each_class():
    losses = [0.1, 0.9, 0.5, 0.2, 0.3, 2.0]
    labels = [0, 0, 0, 1, 1, 1]
    # ceil(0.5 * 3) = 2 per class: rows 0 and 2 of class 0, rows 3 and 4 of class 1
    assert small_loss_split(losses, labels, "fraction", 0.5).tolist() == [True, False, True, True, True, False]
    assert small_loss_split(losses, labels, "fraction", 0.1).tolist() == [True, False, False, True, False, False]


def test_gmm_split_separates_two_loss_clusters_per_class():
    losses = [0.01, 0.02, 2.0, 0.03, 2.1, 0.02, 1.9] + [0.4, 0.1, 0.3]
    labels = [0] * 7 + [1] * 3
    clean = small_loss_split(losses, labels, "gmm", 0.5)
    assert clean[:7].tolist() == [True, True, False, True, False, True, False]
    # three rows are too few for a mixture: the fraction rule, ceil(1.5) = 2 lowest
    assert clean[7:].tolist() == [False, True, True]
    # no spread at all: the fraction rule too
    assert small_loss_split([1.0] * 4, [0] * 4, "gmm", 0.5).tolist() == [True, True, False, False]


def test_split_rejects_bad_settings():
    with pytest.raises(ValueError, match="method must be one of"):
        small_loss_split([1.0], [0], "median")
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        small_loss_split([1.0], [0], "fraction", 0)
    with pytest.raises(ValueError, match="2 losses for 1 labels"):
        small_loss_split([1.0, 2.0], [0])


def test_diverse_demos_start_from_the_lowest_loss_and_spread_out():
    embeddings = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.7, 0.7], [1, 1]])
    losses = [0.1, 0.2, 0.3, 0.05, 0.5]
    labels = [0, 0, 0, 0, 1]
    clean = np.array([True, True, True, False, False])  # row 3 has the lowest loss but is noisy
    demos, without = diverse_demos(embeddings, losses, labels, clean, per_class=2, pool_per_class=3)
    assert demos == {0: [0, 2]}  # row 1 is a near copy of row 0
    assert without == [1]
    demos, _ = diverse_demos(embeddings, losses, labels, clean, per_class=3, pool_per_class=2)
    assert demos == {0: [0, 1]}  # only the 2 lowest-loss clean rows are candidates


def test_nearest_demos_by_cosine_similarity():
    queries = np.array([[1.0, 0.0], [0.0, 2.0]])
    demos = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 1.0]])
    assert nearest_demos(queries, demos, 2).tolist() == [[1, 2], [0, 2]]
    assert nearest_demos(queries, demos, 5).shape == (2, 3)


def test_merge_replaces_relabelled_rows_and_keeps_abstentions_old(tmp_path, make_config, ray_cluster):
    import dataclasses
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import schemas
    from pipeline.config import DistillConfig, RoundsConfig, StudentConfig
    from pipeline.freeal_steps import run_merge

    base = make_config("in", "out")
    config = dataclasses.replace(base, student=StudentConfig(model="s"),
                                 distill=DistillConfig(output="d", validation="v"),
                                 rounds=RoundsConfig(output=str(tmp_path), strategy="freeal"))

    def row(row_id, label, n_valid=1):
        return {"id": row_id, "text": f"text {row_id}", "votes": [label or "<abstain>"], "hard_label": label,
                "soft_label": None, "consistency": 1.0 if label else 0.0, "n_valid": n_valid, "rationale": None,
                "prompt_tokens": 1, "completion_tokens": 1, "truncated": False, "teacher_model": "t",
                "prompt_hash": "h"}

    for folder, rows in (("rounds/0/labels/data", [row("a", "negative"), row("b", "neutral"), row("c", None, 0),
                                                    row("d", "positive")]),
                         ("rounds/1/relabelled/data", [row("a", "positive"), row("b", "neutral"),
                                                       row("c", "negative"), row("d", None, 0)])):
        (tmp_path / folder).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schemas.LABELLED), tmp_path / folder / "part-0.parquet")

    report = run_merge(config, 1, log=lambda _: None)

    merged = pq.read_table(tmp_path / "rounds/1/labels/data").sort_by("id").to_pylist()
    assert [(r["id"], r["hard_label"]) for r in merged] == [
        ("a", "positive"), ("b", "neutral"), ("c", "negative"), ("d", "positive")]  # d: the new answer abstained
    assert report["labels_changed"] == 2 and report["relabelled_rows"] == 3 and report["rows"] == 4
    assert report["changes"] == {"abstained -> negative": 1, "negative -> positive": 1}
    assert json.loads((tmp_path / "rounds/1/labels/manifest.json").read_text())["labels"] == base.task.label_names


def test_merge_over_many_files_keeps_every_id_once_and_counts_each_change(tmp_path, make_config, ray_cluster):
    """The streamed merge against a plain dictionary merge: 600 labels in 3 files, 250 answers in 2."""
    import collections
    import dataclasses
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import schemas
    from pipeline.config import DistillConfig, RoundsConfig, StudentConfig
    from pipeline.freeal_steps import run_merge

    base = make_config("in", "out")
    config = dataclasses.replace(base, student=StudentConfig(model="s"),
                                 distill=DistillConfig(output="d", validation="v"),
                                 rounds=RoundsConfig(output=str(tmp_path), strategy="freeal"))
    rng, labels = random.Random(3), base.task.label_names

    def row(row_id, label):
        return {"id": row_id, "text": f"t{row_id}", "votes": [label or "<abstain>"], "hard_label": label,
                "soft_label": None, "consistency": 1.0, "n_valid": 1 if label else 0, "rationale": None,
                "prompt_tokens": 1, "completion_tokens": 1, "truncated": False, "teacher_model": "t",
                "prompt_hash": "h"}

    old = {f"r{i}": rng.choice([*labels, None]) for i in range(600)}
    answers = {row_id: rng.choice([*labels, None]) for row_id in rng.sample(sorted(old), 250)}
    for folder, table, parts in (("rounds/0/labels/data", old, 3), ("rounds/1/relabelled/data", answers, 2)):
        (tmp_path / folder).mkdir(parents=True)
        ids = sorted(table)
        for k in range(parts):
            pq.write_table(pa.Table.from_pylist([row(i, table[i]) for i in ids[k::parts]], schema=schemas.LABELLED),
                           tmp_path / folder / f"part-{k}.parquet")

    report = run_merge(config, 1, log=lambda _: None)

    expected = {i: (answers[i] if answers.get(i) else label) for i, label in old.items()}
    merged = pq.read_table(tmp_path / "rounds/1/labels/data")
    assert sorted(merged.column("id").to_pylist()) == sorted(old)  # every id once
    assert dict(zip(merged.column("id").to_pylist(), merged.column("hard_label").to_pylist())) == expected
    moves = collections.Counter(f"{old[i] or 'abstained'} -> {answers[i]}" for i in answers
                                if answers[i] and answers[i] != old[i])
    assert report["changes"] == dict(sorted(moves.items())) and report["labels_changed"] == sum(moves.values())
    assert report["rows"] == 600 and report["relabelled_rows"] == sum(1 for a in answers.values() if a)


def _scored(tmp_path, losses, classes, seed=0, files=5):
    """Rows as the select step's scoring pass writes them, in several files."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pipeline.freeal import order_keys
    from pipeline.freeal_select import Scored
    from pipeline.idindex import hash_ids

    rng = np.random.default_rng(seed)
    n = len(losses)
    ids = pa.array([f"row{i}" for i in range(n)])
    embeddings = rng.normal(size=(n, 4)).astype(np.float16)
    table = pa.table({
        "id": ids, "text": [f"text {i}" for i in range(n)], "class": pa.array(classes, pa.int16()),
        "loss": pa.array(losses, pa.float32()),
        "order": pa.array(order_keys(np.asarray(losses, np.float32), hash_ids(ids)), pa.uint64()),
        "predicted": pa.array(np.zeros(n), pa.int16()), "confidence": pa.array(np.ones(n), pa.float32()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), 4),
    })
    paths = []
    for k, start in enumerate(range(0, n, -(-n // files))):
        paths.append(str(tmp_path / f"part-{k}.parquet"))
        pq.write_table(table.slice(start, -(-n // files)), paths[-1])
    return Scored(pafs.LocalFileSystem(), paths), table


def _streamed_clean(scored, table, method, fraction, n_classes):
    from pipeline.freeal_select import clean_mask, split_rules

    rules = split_rules(scored, scored.class_stats(n_classes), method, fraction)
    return clean_mask(rules, table.column("class").to_numpy(), table.column("loss").to_numpy(),
                      table.column("order").to_numpy()), rules


def test_the_streamed_fraction_split_is_the_in_memory_one(tmp_path, ray_cluster):
    """Distinct losses: exactly the rows small_loss_split keeps. Equal losses and a one-row class: exactly
    ceil(fraction * n) rows still (ties broken by id hash, not by position)."""
    rng = np.random.default_rng(1)
    losses = np.concatenate([rng.exponential(1.0, 700), np.full(50, 0.25), [3.0]]).astype(np.float32)
    classes = np.concatenate([rng.integers(0, 2, 700), np.full(50, 2), [3]])
    scored, table = _scored(tmp_path, losses, classes)
    clean, rules = _streamed_clean(scored, table, "fraction", 0.3, 5)
    distinct = classes < 2
    assert clean[distinct].tolist() == small_loss_split(losses[distinct], classes[distinct], "fraction", 0.3).tolist()
    assert clean[classes == 2].sum() == 15 and clean[classes == 3].tolist() == [True]
    assert set(rules) == {0, 1, 2, 3}  # the empty class 4 has no rule


def test_the_streamed_gmm_split_fits_the_histogram_like_the_data(tmp_path, ray_cluster):
    """Two loss clusters per class, wide apart (classes 0, 1) or two hundredths apart (3):
    the mixture fitted to the histogram splits the rows as the one fitted to the data does."""
    rng = np.random.default_rng(2)
    low, high = rng.normal(0.1, 0.03, 600).clip(0.001), rng.normal(2.0, 0.4, 300).clip(0.5)
    close = np.concatenate([rng.normal(1.0, 2e-3, 100), rng.normal(1.02, 2e-3, 100)])
    losses = np.concatenate([low, high, [0.1, 0.2, 3.0], close]).astype(np.float32)
    classes = np.concatenate([rng.integers(0, 2, 900), [2, 2, 2], np.full(200, 3)])
    scored, table = _scored(tmp_path, losses, classes)
    clean, rules = _streamed_clean(scored, table, "gmm", 0.5, 4)
    reference = small_loss_split(losses, classes, "gmm", 0.5)
    assert (clean[:900] == reference[:900]).mean() > 0.99 and clean[:600].all() and not clean[600:900].any()
    assert (clean[903:] == reference[903:]).mean() > 0.97 and 80 < clean[903:].sum() < 120
    assert "mixture" in rules[0] and "mixture" in rules[1] and "mixture" in rules[3]
    assert "max_order" in rules[2] and clean[900:903].tolist() == [True, True, False]  # 3 rows: ceil(1.5) lowest


def test_demo_pools_hold_the_lowest_loss_clean_rows_and_demos_match_the_in_memory_choice(tmp_path, ray_cluster):
    from pipeline.freeal_select import choose_demos

    rng = np.random.default_rng(3)
    losses = rng.exponential(1.0, 400).astype(np.float32)
    classes = rng.integers(0, 3, 400)
    scored, table = _scored(tmp_path, losses, classes)
    clean, rules = _streamed_clean(scored, table, "fraction", 0.5, 3)
    pool = scored.demo_pool(rules, 6)
    for c in range(3):
        rows = np.flatnonzero(clean & (classes == c))
        expected = rows[np.argsort(losses[rows], kind="stable")[:6]]
        assert pool[c].column("id").to_pylist() == [f"row{i}" for i in expected]
    demos = choose_demos(pool, ["a", "b", "c"], per_class=3)
    embeddings = table.column("embedding").combine_chunks().flatten().to_numpy().astype(float).reshape(-1, 4)
    reference, _ = diverse_demos(embeddings, losses, classes, clean, 3, 6)
    assert demos["texts"] == [f"text {i}" for c in range(3) for i in reference[c]]
    assert demos["labels"] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert demos["mixed"] == [0, 3, 6, 1, 4, 7, 2, 5, 8]  # an abstained row's demos: each class in turn
