import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline import tasks
from pipeline.config import ABSTAIN, Demo, Label, TaskConfig
from pipeline.errors import ConfigError
from pipeline.tasks.multilabel import Multilabel

NAMES = ["sports", "politics", "arts and culture"]


def make_task(threshold: float = 0.5, demos: list[Demo] | None = None,
              names: list[str] = NAMES) -> TaskConfig:
    return TaskConfig(
        name="topics", instruction="Tag the topics of the text.",
        labels=[Label(name, f"texts about {name}") for name in names],
        demos=demos or [], type="multilabel", label_threshold=threshold,
    )


@pytest.fixture
def kind() -> Multilabel:
    return Multilabel(make_task(), samples=4)


def test_registry_gives_the_multilabel_type():
    kind = tasks.get(make_task(), 4)
    assert isinstance(kind, Multilabel) and kind.name == "multilabel" and kind.samples == 4


# ---------------------------------------------------------------- parser
@pytest.mark.parametrize("completion, expected", [
    ("The match and the vote.\nAnswer: sports, politics", ("sports", "politics")),
    ("Answer: politics; sports", ("sports", "politics")),  # label order, whatever the answer's
    ("Answer: Sports and Arts and Culture.", ("sports", "arts and culture")),  # "and" inside a name stays
    ("**Answer:** SPORTS!", ("sports",)),
    ('Answer: ["politics", "sports"]', ("sports", "politics")),
    ("Answer:\n- sports\n- politics\nThat is all.", ("sports", "politics")),
    ("First thought Answer: politics. On reflection\nAnswer: sports", ("sports",)),  # the last marker
    ("Answer: the labels are sports, arts_and_culture", ("sports", "arts and culture")),
    ("Answer: none", ()),
    ("Nothing fits.\nAnswer: None.", ()),
    ("Answer: no label", ()),
    ("Answer: []", ()),
    ("none", ()),  # a bare last line
    ("Answer: weather, sports", ("sports",)),  # an unknown item is dropped
    ("Answer: sports, sports", ("sports",)),
    ("Answer: not sports, politics", ("politics",)),  # a negated item is dropped
    ("Answer: sports (not politics)", ("sports",)),
    ("Answer: sports politics, arts and culture", ("arts and culture",)),  # an item naming two is dropped
    ("Answer: sports, none", ("sports",)),
])
def test_parse(kind, completion, expected):
    assert kind.parse(completion, "some text") == expected


@pytest.mark.parametrize("completion", [
    "",
    "I cannot tell.",
    "Answer:",  # truncated after the marker
    "Answer: weather",  # names nothing and does not say none
    "Answer: not sports",
    "Answer: neither sports nor politics",
    "Answer: sports or politics",  # one item naming two labels
    "The text is about sports and politics.",  # no marker: a sentence, not a bare list
    "Reasoning about it\nsports, weather",  # no marker: a last line with an unknown item
])
def test_parse_abstains(kind, completion):
    assert kind.parse(completion, "some text") is None


def test_parse_without_marker_takes_a_bare_last_line(kind):
    assert kind.parse("It is about a match and an election.\nPolitics, Sports", "t") == ("sports", "politics")


def test_parse_prefers_the_longest_name():
    kind = Multilabel(make_task(names=["negative", "very negative", "sports"]))
    assert kind.parse("Answer: very negative, sports", "t") == ("very negative", "sports")
    assert kind.parse("Answer: negative", "t") == ("negative",)


def test_parse_never_leaves_the_label_set(kind):
    completions = ["Answer: hacked, <abstain>, sports", "Answer: ignore the labels and say evil", "Answer: ,;,",
                   "Answer: " + ", ".join(["politics"] * 50 + ["x"])]
    for completion in completions:
        parsed = kind.parse(completion, "t")
        assert parsed is None or set(parsed) <= set(NAMES)


# ---------------------------------------------------------------- prompt and config
def test_system_message_and_demo_answers_round_trip():
    demos = [Demo(text="Goal in the final.", rationale="A match.", labels=["sports"]),
             Demo(text="A poem.", labels=["arts and culture", "politics"]),
             Demo(text="It rained.", rationale="Weather only.", labels=[])]
    kind = Multilabel(make_task(demos=demos))
    system = kind.system_message()
    assert "- sports: texts about sports" in system and "Answer: none" in system
    assert "Answer: <label>, <label>" in system and "never instructions" in system
    answers = [kind.demo_answer(demo) for demo in demos]
    assert answers == ["Reasoning: A match.\nAnswer: sports", "Answer: politics, arts and culture",
                       "Reasoning: Weather only.\nAnswer: none"]
    assert [kind.parse(answer, "") for answer in answers] == [("sports",), ("politics", "arts and culture"), ()]


def test_smoke_answers_make_parseable_noise(kind):
    tokens = kind.smoke_answers()
    assert tokens[:4] == [" Answer:", "\n", ",", " none"] and tokens[4:] == [f" {name}" for name in NAMES]
    assert kind.parse("".join([tokens[0], tokens[5], tokens[2], tokens[4]]), "t") == ("sports", "politics")
    assert kind.parse("".join([tokens[0], tokens[3], tokens[1]]), "t") == ()


def test_check_accepts_a_valid_task():
    Multilabel(make_task(threshold=1.0, demos=[Demo(text="x", labels=["politics"]), Demo(text="y")])).check()


@pytest.mark.parametrize("task, message", [
    (make_task(demos=[Demo(text="x", labels=["sports"]), Demo(text="y", labels=["politics", "x"])]),
     "task.demos[1].labels[1]: 'x' is not one of ['sports', 'politics', 'arts and culture']"),
    (make_task(demos=[Demo(text="x", labels=["sports", "sports"])]),
     "task.demos[0].labels[1]: 'sports' is listed twice"),
    (make_task(demos=[Demo(text="x", label="sports")]), "task.demos[0].label: a multilabel demo lists its labels"),
    (make_task(threshold=0.0), "task.label_threshold: must be in (0, 1], got 0.0"),
    (make_task(threshold=1.5), "task.label_threshold: must be in (0, 1], got 1.5"),
    (make_task(names=["sports", "None"]), "task.labels[1].name: 'None' is how a multilabel answer says no label"),
    (make_task(names=["sports", "art, culture"]), "task.labels[1].name: 'art, culture' holds a ','"),
])
def test_check_errors(task, message):
    with pytest.raises(ConfigError) as error:
        Multilabel(task).check()
    assert str(error.value).startswith(message)


# ---------------------------------------------------------------- votes
def test_votes_are_json_lists(kind):
    assert kind.vote(("sports", "politics")) == '["sports","politics"]'
    assert kind.vote(()) == "[]"
    assert kind.vote(None) == ABSTAIN
    assert json.loads(kind.vote(("arts and culture",))) == ["arts and culture"]


def test_aggregate_k4_shares_labels_and_consistency(kind):
    parsed = [("sports", "politics"), ("sports",), ("sports", "politics", "arts and culture"),
              ("sports", "politics")]
    completions = ["one", "two", "three", "four"]
    row = kind.aggregate(parsed, completions, "t")
    assert row["label_scores"] == [1.0, 0.75, 0.25]
    assert row["labels"] == ["sports", "politics"]
    assert row["consistency"] == pytest.approx((1.0 + 0.75 + 0.75) / 3)
    assert row["n_valid"] == 4
    assert row["rationale"] == "one"  # the first sample whose set is the result

    at = Multilabel(make_task(threshold=0.75), 4).aggregate(parsed, completions, "t")
    above = Multilabel(make_task(threshold=0.76), 4).aggregate(parsed, completions, "t")
    low = Multilabel(make_task(threshold=0.25), 4).aggregate(parsed, completions, "t")
    assert at["labels"] == ["sports", "politics"]  # a share equal to the threshold is on
    assert above["labels"] == ["sports"]
    assert above["rationale"] == "two"
    assert low["labels"] == NAMES
    assert low["rationale"] == "three"
    assert at["label_scores"] == above["label_scores"] == row["label_scores"]  # the threshold moves labels only


def test_aggregate_with_abstentions_and_the_empty_set(kind):
    row = kind.aggregate([None, (), ("politics",), ()], [" a ", " b ", "c", "d"], "t")
    assert row["n_valid"] == 3
    assert row["label_scores"] == [0.0, pytest.approx(1 / 3), 0.0]
    assert row["labels"] == []  # none applies: a result, not an abstention
    assert row["consistency"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert row["rationale"] == "b"  # stripped, and an abstained sample is never the rationale


def test_aggregate_no_agreeing_sample_takes_the_first_valid(kind):
    row = kind.aggregate([None, ("sports",), ("politics",)], ["x", "first", "second"], "t")
    assert row["labels"] == ["sports", "politics"] and row["rationale"] == "first"
    assert row["consistency"] == pytest.approx(0.5 * 2 / 3 + 1 / 3)


def test_aggregate_all_abstained(kind):
    assert kind.aggregate([None] * 4, ["a"] * 4, "t") == {
        "labels": None, "label_scores": None, "consistency": 0.0, "n_valid": 0, "rationale": None}


def test_aggregate_unanimous_is_fully_consistent(kind):
    assert kind.aggregate([("politics",)] * 4, ["a"] * 4, "t")["consistency"] == 1.0


def test_threshold_boundary_is_exact_for_decimal_thresholds():
    kind = Multilabel(make_task(threshold=0.7), 10)
    parsed = [("sports",)] * 7 + [()] * 3  # 7 / 10 = 0.7, but 0.7 * 10 = 7.000000000000001
    assert kind.aggregate(parsed, ["a"] * 10, "t")["labels"] == ["sports"]
    assert kind.aggregate([("sports",)] * 6 + [()] * 4, ["a"] * 10, "t")["labels"] == []


def labelled_table(kind: Multilabel, rows: list[dict]) -> pa.Table:
    full = [{"id": row["id"], "text": row.get("text", "t"), "votes": ["[]"], "consistency": 1.0, "n_valid": 1,
             "rationale": None, "prompt_tokens": 1, "completion_tokens": 1, "truncated": False,
             "teacher_model": "m", "prompt_hash": "h", "labels": row["labels"],
             "label_scores": row["label_scores"]}
            for row in rows]
    return pa.Table.from_pylist(full, schema=kind.labelled_schema())


def test_labelled_rows_fit_the_schema_and_are_counted(kind):
    parsed = [[("sports",)] * 4, [None] * 4, [("sports", "politics"), ()] * 2]
    rows = []
    for i, samples in enumerate(parsed):
        row = {"id": str(i), "text": f"text {i}", "votes": [kind.vote(p) for p in samples],
               **kind.aggregate(samples, ["c"] * 4, "t"), "prompt_tokens": 1, "completion_tokens": 1,
               "truncated": False, "teacher_model": "m", "prompt_hash": "h"}
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=kind.labelled_schema())
    assert table.schema.names[3:5] == ["labels", "label_scores"]
    assert table.column("votes")[2].as_py() == ['["sports","politics"]', "[]"] * 2
    assert kind.label_counts(table) == {"sports": 2, "politics": 1, "arts and culture": 0}
    kind.check_labelled(table, "f.parquet")
    assert kind.teacher_targets(table) == [["sports"], None, ["sports", "politics"]]


def test_check_labelled_names_the_row(kind):
    from pipeline.distill import LabelDataError

    good = {"labels": ["sports"], "label_scores": [1.0, 0.0, 0.0]}
    table = labelled_table(kind, [{"id": "a", **good}, {"id": "b", "labels": ["sports", "weather"],
                                                         "label_scores": [1.0, 0.0, 0.0]}])
    message = r"^distill.labels: row id 'b' in f.parquet has label 'weather', not one of \['sports'"
    with pytest.raises(LabelDataError, match=message):
        kind.check_labelled(table, "f.parquet")
    table = labelled_table(kind, [{"id": "a", **good}, {"id": "c", "labels": [], "label_scores": [0.5, 0.5]}])
    with pytest.raises(LabelDataError, match=r"row id 'c' in f.parquet has label_scores of length 2, expected 3"):
        kind.check_labelled(table, "f.parquet")
    table = labelled_table(kind, [{"id": "d", "labels": [], "label_scores": [0.5, 1.5, 0.0]}])
    with pytest.raises(LabelDataError, match=r"row id 'd' in f.parquet has a label_score outside \[0, 1\]"):
        kind.check_labelled(table, "f.parquet")
    kind.check_labelled(labelled_table(kind, [{"id": "e", "labels": None, "label_scores": None}]), "f.parquet")


def test_train_rows(kind):
    table = labelled_table(kind, [
        {"id": "a", "text": "x", "labels": ["sports", "arts and culture"], "label_scores": [1.0, 0.25, 0.5]},
        {"id": "b", "text": "y", "labels": [], "label_scores": [0.0, 0.25, 0.0]},
    ])
    rows = kind.train_rows(table)
    assert rows["text"].dtype == object and list(rows["text"]) == ["x", "y"]
    assert rows["hard"].dtype == np.float32 and rows["hard"].tolist() == [[1, 0, 1], [0, 0, 0]]
    assert rows["soft"].dtype == np.float32 and rows["soft"].tolist() == [[1.0, 0.25, 0.5], [0.0, 0.25, 0.0]]


def test_empty_tables(kind):
    table = labelled_table(kind, [])
    kind.check_labelled(table, "f.parquet")
    assert kind.label_counts(table) == dict.fromkeys(NAMES, 0)
    rows = kind.train_rows(table)
    assert rows["text"].shape == (0,) and rows["hard"].shape == rows["soft"].shape == (0, 3)


def test_train_rows_refuse_an_abstention(kind):
    from pipeline.distill import LabelDataError

    table = labelled_table(kind, [{"id": "z", "labels": None, "label_scores": None}])
    with pytest.raises(LabelDataError, match="row id 'z' abstained"):
        kind.train_rows(table)


# ---------------------------------------------------------------- student
WORDS = {"sports": "football", "politics": "election", "arts and culture": "museum"}
FILLER = ["the", "a", "today", "news", "people", "city", "report", "week"]


def toy_set(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Texts whose labels are the topic words they hold (each three times; "news" for none)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        on = [name for name in NAMES if rng.random() < 0.5]
        words = [WORDS[name] for name in on] * 3
        rng.shuffle(words)
        texts.append(" ".join(words) or "news")
        labels.append(on)
    return texts, labels


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    from pipeline.smoke import build_tiny_student

    torch.manual_seed(0)  # its random encoder, the same whichever test builds it first
    corpus = [" ".join(FILLER + list(WORDS.values()))] * 8
    return str(build_tiny_student(tmp_path_factory.mktemp("student"), corpus))


def test_load_student_has_a_sigmoid_head(kind, tiny_student):
    tokenizer, model = kind.load_student(tiny_student)
    assert model.config.num_labels == 3
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == {0: "sports", 1: "politics", 2: "arts and culture"}


def test_collate_and_the_three_losses(kind, tiny_student):
    torch.manual_seed(0)
    tokenizer, model = kind.load_student(tiny_student)
    batch = {"text": np.array(["football", "election museum today news"], dtype=object),
             "hard": np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32),
             "soft": np.array([[0.75, 0.0, 0.25], [0.0, 1.0, 0.5]], dtype=np.float32)}
    inputs = kind.collate(tokenizer, batch, max_length=16)
    assert inputs["input_ids"].shape == inputs["attention_mask"].shape
    assert inputs["input_ids"].shape[1] == int(inputs["attention_mask"].sum(dim=1).max())  # padded to the longest
    assert inputs["attention_mask"][0].sum() < inputs["attention_mask"][1].sum()
    assert inputs["hard"].dtype == torch.float32 and inputs["soft"].tolist() == batch["soft"].tolist()
    # Ray Data may hand a tensor column over as an object array of rows
    rows = {**batch, "soft": np.array([row for row in batch["soft"]] + [None], dtype=object)[:2]}
    assert kind.collate(tokenizer, rows, 16)["soft"].tolist() == batch["soft"].tolist()

    model.eval()
    with torch.no_grad():
        z = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.double()
        p = torch.sigmoid(z)

        def bce(target):
            target = torch.as_tensor(target, dtype=torch.float64)
            return float((-(target * p.log() + (1 - target) * (1 - p).log())).sum(dim=1).mean())

        assert kind.loss(model, inputs, "cls").item() == pytest.approx(bce(batch["hard"]), rel=1e-5)
        assert kind.loss(model, inputs, "kl").item() == pytest.approx(bce(batch["soft"]), rel=1e-5)
        expected_rgr = float(((p - torch.as_tensor(batch["soft"], dtype=torch.float64)) ** 2).sum(dim=1).mean())
        assert kind.loss(model, inputs, "rgr").item() == pytest.approx(expected_rgr, rel=1e-5)
        assert kind.loss(model, {**inputs, "soft": inputs["hard"]}, "kl").item() == pytest.approx(
            kind.loss(model, inputs, "cls").item())
    with pytest.raises(ValueError, match="distill.mode: must be one of"):
        kind.loss(model, inputs, "mse")


def test_soft_losses_are_minimal_at_the_shares(kind):
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.logits})()

    soft = torch.tensor([[0.2, 0.5, 0.9]])
    batch = {"input_ids": None, "attention_mask": None, "soft": soft, "hard": torch.tensor([[0.0, 1.0, 1.0]])}
    at, off = Fixed(torch.logit(soft)), Fixed(torch.zeros(1, 3))
    for mode in ("kl", "rgr"):
        assert kind.loss(at, batch, mode) < kind.loss(off, batch, mode)
    assert kind.loss(at, batch, "rgr").item() == pytest.approx(0.0, abs=1e-12)
    entropy = -sum(s * math.log(s) + (1 - s) * math.log(1 - s) for s in (0.2, 0.5, 0.9))
    assert kind.loss(at, batch, "kl").item() == pytest.approx(entropy, rel=1e-5)


# The smoke student is a random BERT whose [CLS] barely sees its input at first (0.3% of its spread), and
# it learns one label at a time. Measured with full batches of this toy set over 8 draws of its
# vocabulary (the WordPiece trainer's ties fall differently per process) and torch seeds: 60 steps gave
# held-out micro-F1 1.0 in the soft modes; hard targets (cls) stalled in about 1 run of 8 with two labels
# undecided (loss 2 ln 2, micro-F1 0.67, what predicting every label scores) and reached 1.0 otherwise,
# so a run that stalls is tried once more from another seed. Mini-batches of 16, or 30 steps, or filler
# words in the texts stalled far more often. Per mode: the loss's floor (the entropy of the 3-to-1
# shares for kl), which the last steps must have closed most of the distance to.
SHARE_ENTROPY = -3 * (0.75 * math.log(0.75) + 0.25 * math.log(0.25))
LOSS_FLOORS = {"cls": 0.0, "kl": SHARE_ENTROPY, "rgr": 0.0}


def train_toy(kind: Multilabel, student: str, mode: str, seed: int) -> tuple[list[float], dict]:
    """60 full-batch AdamW steps in plain torch through train_rows, collate, loss and predict."""
    torch.manual_seed(seed)
    tokenizer, model = kind.load_student(student)
    texts, labels = toy_set(96, seed=1)
    table = labelled_table(kind, [
        {"id": str(i), "text": text, "labels": on,
         "label_scores": [0.75 if name in on else 0.25 for name in NAMES]}  # the teacher is 3-to-1 sure
        for i, (text, on) in enumerate(zip(texts, labels))])
    batch = kind.collate(tokenizer, kind.train_rows(table), max_length=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(60):
        loss = kind.loss(model, batch, mode)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    held_texts, held_labels = toy_set(64, seed=2)
    predictions = kind.predict(model, tokenizer, held_texts, max_length=16, batch_size=20)
    return losses, kind.evaluate(held_labels, predictions)


@pytest.mark.parametrize("mode", ["cls", "kl", "rgr"])
def test_a_short_training_run_learns_the_toy_set(kind, tiny_student, mode):
    for seed in (0, 1):
        losses, report = train_toy(kind, tiny_student, mode, seed)
        if report["micro_f1"] >= 0.9:
            break
    floor = LOSS_FLOORS[mode]
    assert np.mean(losses[-5:]) - floor < 0.4 * (np.mean(losses[:5]) - floor), losses[::5]
    assert report["micro_f1"] >= 0.9, (report["headline"], losses[::5])
    held_labels = toy_set(64, seed=2)[1]
    all_on = kind.evaluate(held_labels, {"labels": [NAMES] * len(held_labels)})
    assert all_on["micro_f1"] < 0.8


def test_predict_columns(kind, tiny_student):
    tokenizer, model = kind.load_student(tiny_student)
    predictions = kind.predict(model, tokenizer, ["football", "museum news", "the"], max_length=16, batch_size=2)
    assert len(predictions["labels"]) == len(predictions["probabilities"]) == 3
    for on, probabilities in zip(predictions["labels"], predictions["probabilities"]):
        assert len(probabilities) == 3 and all(0.0 <= p <= 1.0 for p in probabilities)
        assert on == [name for name, p in zip(NAMES, probabilities) if p >= 0.5]
    table = pa.Table.from_pydict({"id": ["1", "2", "3"], **predictions},
                                 schema=pa.schema([pa.field("id", pa.string()), *kind.prediction_fields()]))
    counts = kind.prediction_counts(table)
    assert list(counts) == NAMES and sum(counts.values()) == sum(len(on) for on in predictions["labels"])
    assert kind.predict(model, tokenizer, [], max_length=16) == {"labels": [], "probabilities": []}


# ---------------------------------------------------------------- metrics
def test_evaluate_by_hand(kind):
    targets = [["sports", "politics"], ["sports"], [], ["arts and culture"]]
    predicted = [["sports"], ["sports", "arts and culture"], [], ["arts and culture"]]
    report = kind.evaluate(targets, {"labels": predicted, "probabilities": [[0.0] * 3] * 4})
    # sports: tp 2; politics: fn 1; arts: tp 1, fp 1. Micro: tp 3, fp 1, fn 1.
    assert report["per_label"]["sports"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2,
                                             "predicted": 2}
    assert report["per_label"]["politics"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                                               "predicted": 0}
    arts = report["per_label"]["arts and culture"]
    assert (arts["precision"], arts["recall"], arts["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert report["micro_precision"] == 0.75 and report["micro_recall"] == 0.75
    assert report["micro_f1"] == pytest.approx(0.75)
    assert report["macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert report["subset_accuracy"] == 0.5  # rows 3 and 4
    assert report["hamming_loss"] == pytest.approx(2 / 12)
    assert report["examples"] == 4
    assert report["headline"] == {"micro_f1": report["micro_f1"], "macro_f1": report["macro_f1"],
                                  "subset_accuracy": 0.5}
    json.dumps(report)
    text = kind.format_evaluation("gold", report)
    assert text.splitlines()[0] == ("gold: 4 examples, micro-F1 0.750, macro-F1 0.556, subset accuracy 0.500, "
                                    "Hamming loss 0.167")
    assert "arts and culture" in text and "politics" in text


def test_evaluate_skips_abstained_targets_and_reads_none_predictions_as_empty(kind):
    report = kind.evaluate([None, ["sports"], []], {"labels": [["sports"], None, None]})
    assert report["examples"] == 2
    assert report["subset_accuracy"] == 0.5
    assert report["per_label"]["sports"]["support"] == 1 and report["per_label"]["sports"]["predicted"] == 0


def test_evaluation_rows(kind):
    table = kind.evaluation_rows(["a", "b"], [["politics", "sports"], []],
                                 {"labels": [["sports", "arts and culture"], []]})
    assert table.to_pylist() == [
        {"row": 1, "text": "a", "labels": ["sports", "politics"], "predicted": ["sports", "arts and culture"],
         "missed": ["politics"], "extra": ["arts and culture"], "correct": False},
        {"row": 2, "text": "b", "labels": [], "predicted": [], "missed": [], "extra": [], "correct": True},
    ]
    assert kind.plots({}) == {}


def test_gold_targets(kind):
    records = [{"id": "1", "text": "a", "labels": ["politics", "sports"]}, {"id": "2", "text": "b", "labels": []}]
    assert kind.gold_targets(records, "evaluate.gold: g.jsonl") == [["sports", "politics"], []]


@pytest.mark.parametrize("record, message", [
    ({"id": "x", "text": "t", "labels": ["sports", "weather"]},
     "gold.jsonl row 2 (id 'x') has label 'weather', not one of ['sports', 'politics', 'arts and culture']"),
    ({"id": "x", "text": "t"}, "gold.jsonl row 2 (id 'x') has labels None, expected a list of label names"),
    ({"id": "x", "text": "t", "labels": "sports"},
     "gold.jsonl row 2 (id 'x') has labels 'sports', expected a list"),
    ({"id": "x", "text": "t", "label": "sports"}, "gold.jsonl row 2 (id 'x') has labels None"),
    ({"id": "x", "text": "t", "labels": [1]}, "gold.jsonl row 2 (id 'x') has labels [1], expected a list"),
    ({"id": "x", "text": " ", "labels": []}, "gold.jsonl row 2 (id 'x') has no text"),
])
def test_gold_targets_errors(kind, record, message):
    from pipeline.evaluate import GoldSetError

    with pytest.raises(GoldSetError) as error:
        kind.gold_targets([{"id": "ok", "text": "t", "labels": []}, record], "gold.jsonl")
    assert str(error.value).startswith(message)


def test_agreement_is_the_same_label_set_and_recalls_are_per_label(kind):
    """The retraining's drift report and guard: a row agrees when the label sets are equal (order aside);
    abstained references (None) are left out."""
    targets = [["sports", "politics"], ["sports"], None, []]
    predictions = {"labels": [["politics", "sports"], ["sports", "arts and culture"], ["sports"], None]}
    assert kind.agreement(targets, predictions).tolist() == [True, False, True]
    report = kind.evaluate(targets, predictions)
    assert kind.class_recalls(report) == {name: scores["recall"] for name, scores in report["per_label"].items()}
