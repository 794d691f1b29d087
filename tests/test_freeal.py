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
