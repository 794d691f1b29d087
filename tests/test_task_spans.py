"""The ``spans`` task type: parser and alignment, votes, BIO encoding and decoding, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import ABSTAIN, Demo, Entity, Label, TaskConfig
from pipeline.errors import ConfigError
from pipeline.tasks.spans import (
    SpanAnswer, Spans, align_entities, bio_tags, decode_bio, encode_bio, encode_texts, parse_entities,
    span_report, text_token_mask,
)

LABELS = ["person", "location", "creative-work"]
BIO = bio_tags(LABELS)
# The WNUT-17 sample that ships with the project (examples/data/README.md), so a clean clone has it.
WNUT = Path(__file__).resolve().parents[1] / "examples" / "data" / "wnut17"
WNUT_LABELS = ["person", "location", "corporation", "product", "creative-work", "group"]


def task(**overrides) -> TaskConfig:
    fields = {
        "name": "ner",
        "instruction": "Find the named entities.",
        "labels": [Label("person", "people"), Label("location", "places"), Label("creative-work", "titles")],
        "type": "spans",
        "demos": [Demo(text="Ann flew to Oslo.", rationale="Ann is a person, Oslo a city.",
                       entities=[Entity("Ann", "person"), Entity("Oslo", "location")])],
    }
    return TaskConfig(**{**fields, **overrides})


def spans_of(answer: SpanAnswer, text: str) -> list[tuple[str, str]]:
    return [(text[s:e], label) for s, e, label in answer.spans]


# ---------------------------------------------------------------- parser
TEXT = "Alice met Bob in Paris. Later alice saw Paris again."


def test_parse_fenced_json_after_the_answer_marker():
    completion = ('Reasoning: Alice and Bob are people.\nAnswer:\n```json\n'
                  '[{"text": "Alice", "type": "person"}, {"text": "Bob", "type": "Person"}]\n```\n')
    answer = parse_entities(completion, TEXT, LABELS)
    assert answer == SpanAnswer(spans=((0, 5, "person"), (10, 13, "person")), dropped_types=0, unaligned=0)


def test_parse_ignores_trailing_prose_and_takes_the_last_marker():
    completion = ('The answer: maybe [{"text": "Bob", "type": "person"}]\n'
                  'Answer: [{"text": "Paris", "type": "location"}] These are all the entities [1].')
    assert spans_of(parse_entities(completion, TEXT, LABELS), TEXT) == [("Paris", "location")]


@pytest.mark.parametrize("completion", [
    'Answer: [{"text": "Alice", "type": "person"}',  # cut off
    "Answer: [{'text': 'Alice', 'type': 'person'}]",  # not JSON
    "Answer: none",
    "Answer: 42",
    "No entities that I can see.",
    "",
])
def test_invalid_or_missing_json_abstains(completion):
    assert parse_entities(completion, TEXT, LABELS) is None


def test_an_empty_list_is_an_answer_not_an_abstention():
    assert parse_entities("Nothing here.\nAnswer: []", TEXT, LABELS) == SpanAnswer(spans=())


def test_without_marker_the_last_list_of_objects_is_the_answer():
    completion = ('Step [1]: first I thought [{"text": "Bob", "type": "person"}], but finally '
                  '[{"text": "Alice", "type": "person"}] is all.')
    assert spans_of(parse_entities(completion, TEXT, LABELS), TEXT) == [("Alice", "person")]


def test_single_object_wrapper_and_key_aliases():
    one = parse_entities('Answer: {"entity": "Bob", "label": "PERSON"}', TEXT, LABELS)
    assert spans_of(one, TEXT) == [("Bob", "person")]
    wrapped = parse_entities('Answer: {"entities": [{"Text": "Paris", "Type": "location"}]}', TEXT, LABELS)
    assert spans_of(wrapped, TEXT) == [("Paris", "location")]


def test_unknown_types_are_dropped_and_counted_never_returned():
    completion = ('Answer: [{"text": "Alice", "type": "person"}, {"text": "Bob", "type": "villain"}, '
                  '{"text": "Paris", "type": "Creative_Work"}, {"text": "Bob"}, "Paris", '
                  '{"text": "Paris", "type": "<abstain>"}]')
    answer = parse_entities(completion, TEXT, LABELS)
    assert spans_of(answer, TEXT) == [("Alice", "person"), ("Paris", "creative-work")]
    assert answer.dropped_types == 4 and answer.unaligned == 0
    assert {label for _, _, label in answer.spans} <= set(LABELS)


def test_unaligned_entities_are_counted():
    completion = ('Answer: [{"text": "Carol", "type": "person"}, {"text": "  Bob ", "type": "person"}, '
                  '{"text": "", "type": "person"}, {"text": "Paris", "type": "location"}, '
                  '{"text": "Paris", "type": "location"}, {"text": "Paris", "type": "location"}]')
    answer = parse_entities(completion, TEXT, LABELS)
    # " Bob " is trimmed; Paris occurs twice, so its third mention has no free occurrence
    assert spans_of(answer, TEXT) == [("Bob", "person"), ("Paris", "location"), ("Paris", "location")]
    assert answer.spans[1][0] == 17 and answer.spans[2][0] == 40
    assert answer.unaligned == 3 and answer.dropped_types == 0


def test_the_same_word_twice_takes_two_occurrences_in_reading_order():
    text = "Paris is not Paris Hilton, said Paris."
    assert align_entities(text, ["Paris", "Paris Hilton", "Paris"]) == [(0, 5), (13, 25), (32, 37)]
    # the cursor: an entity listed after another is looked for after it first
    assert align_entities("Bob met Alice and Bob", ["Alice", "Bob"]) == [(8, 13), (18, 21)]
    # listed once: the first occurrence
    assert align_entities(text, ["Paris"]) == [(0, 5)]
    # listed out of order: the cursor finds nothing after Hilton's end for "Paris Hilton" again,
    # so the entity falls back to the first free occurrence anywhere
    assert align_entities(text, ["Paris", "Paris", "Paris Hilton"]) == [(0, 5), (13, 18), None]


def test_case_insensitive_fallback_and_exact_match_first():
    text = "the apple fell near Apple headquarters in PARIS"
    assert align_entities(text, ["Apple"]) == [(20, 25)]  # exact beats an earlier case-insensitive match
    assert align_entities(text, ["paris"]) == [(42, 47)]
    answer = parse_entities('Answer: [{"text": "Paris", "type": "location"}]', text, LABELS)
    assert answer.spans == ((42, 47, "location"),) and answer.unaligned == 0


def test_word_boundaries_are_preferred():
    text = "USB sticks sold in the US"
    assert align_entities(text, ["US"]) == [(23, 25)]
    assert align_entities("USB only", ["US"]) == [(0, 2)]  # inside a word when that is all there is


def test_overlapping_entities_in_one_sample_keep_the_first_listed():
    text = "She reads the New York Times daily."
    answer = parse_entities('Answer: [{"text": "New York Times", "type": "creative-work"}, '
                            '{"text": "New York", "type": "location"}]', text, LABELS)
    assert spans_of(answer, text) == [("New York Times", "creative-work")]
    assert answer.unaligned == 1


def test_vote_is_canonical():
    kind = Spans(task(), samples=3)
    answer = SpanAnswer(spans=((10, 13, "person"), (0, 5, "person")))
    assert kind.vote(answer) == '[[0,5,"person"],[10,13,"person"]]'
    assert kind.vote(SpanAnswer(spans=())) == "[]"
    assert kind.vote(None) == ABSTAIN


# ---------------------------------------------------------------- votes
A, B, C = (0, 5, "person"), (10, 13, "person"), (17, 22, "location")
SAMPLES = [SpanAnswer((A, B), dropped_types=1), SpanAnswer((A, B, C), unaligned=2), SpanAnswer((A,)), None]
COMPLETIONS = ["first", "second", "third", "fourth"]


@pytest.mark.parametrize("min_votes, kept, rationale", [
    (1, [(A, 1.0), (B, 2 / 3), (C, 1 / 3)], "second"),
    (2, [(A, 1.0), (B, 2 / 3)], "first"),
    (3, [(A, 1.0)], "third"),
    (4, [], "first"),  # no sample names nothing: the first valid one
])
def test_aggregate_keeps_spans_named_by_min_votes_of_k(min_votes, kept, rationale):
    kind = Spans(task(min_votes=min_votes), samples=4)
    row = kind.aggregate(SAMPLES, COMPLETIONS, TEXT)
    assert [((s["start"], s["end"], s["label"]), s["score"]) for s in row["spans"]] == \
        [(span, pytest.approx(score)) for span, score in kept]
    assert row["n_valid"] == 3 and row["dropped_types"] == 1 and row["unaligned"] == 2
    assert row["consistency"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert row["rationale"] == rationale


def test_default_min_votes_is_a_majority_of_k():
    assert Spans(task(), samples=4).min_votes == 3
    assert Spans(task(), samples=5).min_votes == 3
    row = Spans(task(), samples=4).aggregate(SAMPLES, COMPLETIONS, TEXT)
    assert [(s["start"], s["end"], s["label"]) for s in row["spans"]] == [A]


def test_overlapping_kept_spans_more_votes_then_earlier_then_longer():
    person, longer, later = (0, 5, "person"), (0, 9, "location"), (3, 12, "creative-work")
    samples = [SpanAnswer((person,)), SpanAnswer((longer,)), SpanAnswer((longer,)), SpanAnswer((later,))]
    row = Spans(task(min_votes=1), samples=4).aggregate(samples, ["a", "b", "c", "d"], "x" * 20)
    assert [(s["start"], s["end"], s["label"], s["score"]) for s in row["spans"]] == [(0, 9, "location", 0.5)]
    tie = [SpanAnswer((person,)), SpanAnswer((longer,)), SpanAnswer((later,)), SpanAnswer((later,))]
    row = Spans(task(min_votes=1), samples=4).aggregate(tie, ["a", "b", "c", "d"], "x" * 20)
    assert [(s["start"], s["end"]) for s in row["spans"]] == [(3, 12)]  # 2 votes beat 1
    tie = [SpanAnswer((person,)), SpanAnswer((person,)), SpanAnswer((longer,)), SpanAnswer((longer,))]
    row = Spans(task(min_votes=2), samples=4).aggregate(tie, ["a", "b", "c", "d"], "x" * 20)
    assert [(s["start"], s["end"]) for s in row["spans"]] == [(0, 9)]  # same start and votes: the longer


def test_consistency_values():
    kind = Spans(task(), samples=4)
    same = [SpanAnswer((A, B))] * 4
    assert kind.aggregate(same, COMPLETIONS, TEXT)["consistency"] == 1.0
    nothing = [SpanAnswer(())] * 3 + [None]
    row = kind.aggregate(nothing, COMPLETIONS, TEXT)
    assert (row["consistency"], row["spans"], row["n_valid"]) == (1.0, [], 3)
    split = [SpanAnswer((A,)), SpanAnswer((A,)), SpanAnswer((B,)), SpanAnswer(())]
    # A: 2/4 -> 0.5, B: 1/4 -> 0.75
    assert kind.aggregate(split, COMPLETIONS, TEXT)["consistency"] == pytest.approx(0.625)
    abstained = kind.aggregate([None] * 4, COMPLETIONS, TEXT)
    assert abstained == {"spans": None, "dropped_types": 0, "unaligned": 0, "consistency": 0.0, "n_valid": 0,
                         "rationale": None}


def test_aggregated_rows_fit_the_labelled_schema():
    kind = Spans(task(), samples=4)
    rows = [kind.aggregate(SAMPLES, COMPLETIONS, TEXT), kind.aggregate([None] * 4, COMPLETIONS, TEXT)]
    schema = pa.schema([*kind.label_fields(), pa.field("consistency", pa.float64()),
                        pa.field("n_valid", pa.int32()), pa.field("rationale", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    assert table.column("spans").to_pylist()[1] is None
    assert kind.labelled_schema().field("spans").type == kind.prediction_fields()[0].type
    assert kind.label_counts(table) == {"person": 1, "location": 0, "creative-work": 0}  # A, at 3 of 4
    assert kind.answer_counts(table) == {"dropped_types": 1, "unaligned": 2}


def test_smoke_answers_parse():
    kind = Spans(task(), samples=4)
    tokens = kind.smoke_answers()
    text = "the cat"
    assert kind.parse("".join([tokens[0], tokens[2], tokens[1]]), text) == SpanAnswer(spans=())
    assert kind.parse("".join([tokens[0], tokens[3]]), text) == SpanAnswer(spans=((0, 3, "person"),))
    assert kind.parse("".join([tokens[1], tokens[4]]), text) == SpanAnswer(spans=((0, 3, "location"),))
    assert kind.parse("".join([tokens[3], tokens[0], tokens[1]]), text) is None


# ---------------------------------------------------------------- config and prompt
def test_check_rejects_bad_demos_and_min_votes():
    Spans(task(min_votes=4), samples=4).check()
    bad_type = task(demos=[Demo(text="Ann flew.", entities=[Entity("Ann", "person")]),
                           Demo(text="Bo ran.", entities=[Entity("Bo", "villain")])])
    with pytest.raises(ConfigError, match=r"task\.demos\[1\]\.entities\[0\]\.type: 'villain' is not one of"):
        Spans(bad_type, samples=4).check()
    absent = task(demos=[Demo(text="Ann flew to Oslo.", entities=[Entity("Oslo", "location"),
                                                                  Entity("Bergen", "location")])])
    with pytest.raises(ConfigError, match=r"task\.demos\[0\]\.entities\[1\]\.text: 'Bergen'"):
        Spans(absent, samples=4).check()
    for votes in (0, 5):
        with pytest.raises(ConfigError, match=r"task\.min_votes: "):
            Spans(task(min_votes=votes), samples=4).check()


def test_prompt_names_the_types_and_demo_answers_parse_back():
    kind = Spans(task(), samples=4)
    system = kind.system_message()
    assert "- location: places" in system and "Answer:" in system and "[]" in system
    demo = Demo(text="Oslo, said Ann.", rationale="A city and a person.",
                entities=[Entity("Ann", "person"), Entity("Oslo", "location")])
    answer = kind.demo_answer(demo)
    assert answer.startswith("Reasoning: A city and a person.\nAnswer: ")
    assert json.loads(answer.split("Answer: ", 1)[1]) == [{"text": "Oslo", "type": "location"},
                                                          {"text": "Ann", "type": "person"}]  # reading order
    assert kind.parse(answer, demo.text) == SpanAnswer(spans=((0, 4, "location"), (11, 14, "person")))
    assert kind.demo_answer(Demo(text="Nothing.")) == "Answer: []"


def test_check_labelled_names_the_row():
    from pipeline.distill import LabelDataError

    kind = Spans(task(), samples=4)
    fields = [pa.field("id", pa.string()), *kind.label_fields()]

    def table(spans):
        return pa.Table.from_pylist([{"id": "ok", "spans": [], "dropped_types": 0, "unaligned": 0},
                                     {"id": "r7", "spans": spans, "dropped_types": 0, "unaligned": 0}],
                                    schema=pa.schema(fields))

    kind.check_labelled(table([{"start": 0, "end": 3, "label": "person", "score": 1.0}]), "f.parquet")
    kind.check_labelled(table(None), "f.parquet")
    for spans, problem in [
        ([{"start": 0, "end": 3, "label": "villain", "score": 1.0}], "label"),
        ([{"start": 3, "end": 3, "label": "person", "score": 1.0}], "start < end"),
        ([{"start": 4, "end": 9, "label": "person", "score": 1.0},
          {"start": 0, "end": 2, "label": "person", "score": 1.0}], "overlaps"),
    ]:
        with pytest.raises(LabelDataError, match=rf"row id 'r7' in f\.parquet .*{problem}"):
            kind.check_labelled(table(spans), "f.parquet")


# ---------------------------------------------------------------- BIO tags and the student
CORPUS = ["Alice visited New York with Bob", "Bob read Dune in Paris", "the cat sat on the mat"] * 20


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from pipeline.smoke import build_tiny_student

    path = build_tiny_student(tmp_path_factory.mktemp("student"), CORPUS)
    return Spans(task(), samples=4).load_student(str(path))


def test_collate_gives_bio_tags_per_token(student):
    tokenizer, _ = student
    kind = Spans(task(), samples=4)
    rows = kind.train_rows(pa.table({
        "text": ["Alice visited New York", "Bob read Dune"],
        "spans": [[{"start": 0, "end": 5, "label": "person", "score": 1.0},
                   {"start": 14, "end": 22, "label": "location", "score": 0.5}],
                  [{"start": 9, "end": 13, "label": "creative-work", "score": 1.0}]],
    }))
    assert rows["text"].dtype == object and json.loads(rows["spans"][1]) == [[9, 13, "creative-work"]]
    batch = kind.collate(tokenizer, rows, max_length=32)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype.is_floating_point is False and str(t.dtype) == "torch.int64" for t in batch.values())
    tags = bio_tags(LABELS)
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()) == \
        ["[CLS]", "alice", "visited", "new", "york", "[SEP]"]
    assert [tags[t] if t >= 0 else t for t in batch["labels"][0].tolist()] == \
        [-100, "B-person", "O", "B-location", "I-location", -100]
    # the shorter text is padded to the longest, padding and special tokens ignored
    assert [tags[t] if t >= 0 else t for t in batch["labels"][1].tolist()] == \
        [-100, "O", "O", "B-creative-work", -100, -100]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 0]


def test_train_rows_leave_out_abstained_rows():
    rows = Spans(task()).train_rows(pa.table({"text": ["a", "b"], "spans": pa.array([None, []], type=Spans(
        task()).label_fields()[0].type)}))
    assert rows["text"].tolist() == ["b"] and rows["spans"].tolist() == ["[]"]


def test_subword_tokens_continue_the_span_and_decode_round_trips(student):
    tokenizer, _ = student
    text = "Parisian-born Alice visited New York, Bobcat and Dunes."
    spans = [(0, 8, "location"), (14, 19, "person"), (28, 36, "location"), (38, 44, "person"),
             (49, 54, "creative-work")]
    encoded = encode_texts(tokenizer, [text], 64)
    offsets, mask = np.asarray(encoded["offset_mapping"])[0], text_token_mask(encoded)[0]
    tags = encode_bio(spans, offsets, mask, LABELS)
    # The tiny student's word pieces depend on its tokenizer's training (they differ between processes);
    # whatever they are, the first piece of the word begins the span and every later piece continues it.
    pieces = tokenizer.tokenize("Parisian")
    assert len(pieces) >= 2 and all(piece.startswith("##") for piece in pieces[1:])
    expected = ["B-location"] + ["I-location"] * (len(pieces) - 1) + ["O"]
    assert [BIO[t] for t in tags[mask][:len(pieces) + 1]] == expected
    decoded = decode_bio(tags, np.ones(len(tags)), offsets, LABELS)
    assert [(s["start"], s["end"], s["label"]) for s in decoded] == spans
    assert all(s["score"] == 1.0 for s in decoded)


def test_decode_follows_seqeval_lenient_convention():
    tags_by_name = {tag: i for i, tag in enumerate(bio_tags(LABELS))}
    sequence = ["O", "I-person", "I-person", "B-person", "I-location", "O", "B-location", "I-location", "O"]
    tags = np.array([-100] + [tags_by_name[t] for t in sequence] + [-100])
    offsets = np.array([(0, 0)] + [(2 * i, 2 * i + 1) for i in range(len(sequence))] + [(0, 0)])
    scores = np.array([0.0, 0.9, 0.8, 0.6, 0.7, 0.5, 0.9, 0.4, 0.2, 0.9, 0.0])
    decoded = decode_bio(tags, scores, offsets, LABELS)
    assert [(s["start"], s["end"], s["label"]) for s in decoded] == \
        [(2, 5, "person"), (6, 7, "person"), (8, 9, "location"), (12, 15, "location")]
    assert [s["score"] for s in decoded] == pytest.approx([0.7, 0.7, 0.5, 0.3])


def test_loss_is_a_differentiable_scalar(student):
    tokenizer, model = student
    kind = Spans(task(), samples=4)
    rows = kind.train_rows(pa.table({"text": ["Alice visited New York"],
                                     "spans": [[{"start": 0, "end": 5, "label": "person", "score": 1.0}]]}))
    loss = kind.loss(model, kind.collate(tokenizer, rows, 32), "cls")
    assert loss.ndim == 0 and np.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    with pytest.raises(ConfigError, match="distill.mode"):
        kind.loss(model, kind.collate(tokenizer, rows, 32), "kl")


def test_predict_returns_spans_within_the_text(student):
    import torch

    tokenizer, model = student
    kind = Spans(task(), samples=4)
    torch.manual_seed(0)
    with torch.no_grad():  # a random head that names entities somewhere
        model.classifier.bias.copy_(torch.tensor([-2.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))
    texts = ["Alice visited New York with Bob", "", "the cat sat on the mat " * 30]
    predicted = kind.predict(model, tokenizer, texts, max_length=24, batch_size=2)
    assert len(predicted["spans"]) == 3 and predicted["spans"][1] == []
    assert sum(len(row) for row in predicted["spans"]) > 0
    for text, row in zip(texts, predicted["spans"]):
        previous_end = 0
        for span in row:
            assert previous_end <= span["start"] < span["end"] <= len(text)
            assert span["label"] in LABELS and 0 < span["score"] <= 1
            assert text[span["start"]:span["end"]].strip() == text[span["start"]:span["end"]]
            previous_end = span["end"]
    assert max(s["end"] for s in predicted["spans"][2]) <= 22 * 4  # truncated to max_length tokens
    table = pa.table({"spans": pa.array(predicted["spans"], type=kind.prediction_fields()[0].type)})
    assert sum(kind.prediction_counts(table).values()) == sum(len(row) for row in predicted["spans"])


# ---------------------------------------------------------------- metrics and gold sets
def test_metrics_against_hand_computed_values():
    kind = Spans(task(), samples=4)
    gold = [[{"start": 0, "end": 5, "label": "person"}, {"start": 10, "end": 15, "label": "location"}],
            [{"start": 0, "end": 4, "label": "person"}],
            [{"start": 3, "end": 8, "label": "creative-work"}]]
    predicted = [[{"start": 0, "end": 5, "label": "person", "score": 0.9},  # right
                  {"start": 10, "end": 14, "label": "location", "score": 0.8}],  # wrong end
                 [{"start": 0, "end": 4, "label": "location", "score": 0.7}],  # wrong type
                 []]
    report = kind.evaluate(gold, {"spans": predicted})
    # person: tp 1, predicted 1, gold 2 -> P 1, R 0.5, F1 2/3; location: tp 0, predicted 2, gold 1 -> 0
    # creative-work: gold 1, nothing predicted -> 0. micro: tp 1, predicted 3, gold 4
    assert report["per_type"]["person"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                            "support": 2, "predicted": 1}
    assert report["per_type"]["location"]["f1"] == 0.0 and report["per_type"]["location"]["support"] == 1
    assert report["precision"] == pytest.approx(1 / 3) and report["recall"] == pytest.approx(1 / 4)
    assert report["micro_f1"] == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert report["examples"] == 3
    assert set(report["headline"]) == {"micro_f1", "macro_f1", "precision", "recall"}
    json.dumps(report)
    # macro-F1 averages over the types that occur in gold or predictions only
    assert span_report([[(0, 5, "person")]], [[(0, 5, "person")]], LABELS)["macro_f1"] == 1.0
    # rows the teacher abstained on have no reference
    assert kind.evaluate([None, gold[1]], {"spans": [predicted[0], predicted[1]]})["examples"] == 1
    lines = kind.format_evaluation("validation", report)
    assert "person" in lines and "0.667" in lines and "macro-F1 0.222" in lines


def test_gold_targets_checks_each_row():
    from pipeline.evaluate import GoldSetError

    kind = Spans(task(), samples=4)
    good = {"id": "g1", "text": "Ann flew to Oslo", "spans": [{"start": 12, "end": 16, "label": "location",
                                                                 "text": "Oslo"},
                                                                {"start": 0, "end": 3, "label": "person"}]}
    assert kind.gold_targets([good], "distill.validation: gold.jsonl") == \
        [[{"start": 0, "end": 3, "label": "person"}, {"start": 12, "end": 16, "label": "location"}]]
    for span, problem in [({"start": 0, "end": 3, "label": "group"}, "label 'group'"),
                          ({"start": 12, "end": 17, "label": "location"}, "offsets"),
                          ({"start": "0", "end": 3, "label": "person"}, "integers"),
                          ({"start": 0, "end": 3, "label": "person", "text": "Bob"}, "'Bob'")]:
        with pytest.raises(GoldSetError, match=rf"gold\.jsonl row 2 \(id 'g2'\) spans\[0\]: .*{problem}"):
            kind.gold_targets([good, {**good, "id": "g2", "spans": [span]}], "distill.validation: gold.jsonl")
    with pytest.raises(GoldSetError, match="row 1 .* no spans"):
        kind.gold_targets([{"id": "x", "text": "Ann", "label": "person"}], "gold")


def test_teacher_targets_and_evaluation_rows():
    kind = Spans(task(), samples=4)
    table = pa.table({"spans": pa.array([[{"start": 0, "end": 3, "label": "person", "score": 0.75}], None],
                                        type=kind.label_fields()[0].type)})
    targets = kind.teacher_targets(table)
    assert targets == [[{"start": 0, "end": 3, "label": "person"}], None]
    rows = kind.evaluation_rows(["Ann ran", "x"], targets, {"spans": [
        [{"start": 0, "end": 3, "label": "person", "score": 0.5}], []]})
    assert rows.column("row").to_pylist() == [1, 2]
    assert json.loads(rows.column("gold")[0].as_py()) == \
        [{"start": 0, "end": 3, "label": "person", "text": "Ann"}]
    assert rows.column("correct").to_pylist() == [True, False]


# ---------------------------------------------------------------- real data
def test_wnut17_gold_spans_survive_bio_round_trip(tmp_path):
    from pipeline.smoke import build_tiny_student

    records = [json.loads(line) for split in ("train", "validation", "test")
               for line in (WNUT / f"{split}.jsonl").read_text().splitlines()]
    labels = WNUT_LABELS
    kind = Spans(TaskConfig(name="wnut17", instruction="Find entities.", labels=[Label(n, n) for n in labels],
                            type="spans"), samples=1)
    targets = kind.gold_targets(records, "wnut17 sample")
    tokenizer, _ = kind.load_student(str(build_tiny_student(tmp_path, [r["text"] for r in records])))
    kept = total = 0
    for first in range(0, len(records), 64):
        chunk, gold = records[first:first + 64], targets[first:first + 64]
        encoded = encode_texts(tokenizer, [r["text"] for r in chunk], 512)
        offsets, mask = np.asarray(encoded["offset_mapping"]), text_token_mask(encoded)
        for i, spans in enumerate(gold):
            expected = [(s["start"], s["end"], s["label"]) for s in spans]
            tags = encode_bio(expected, offsets[i], mask[i], labels)
            decoded = decode_bio(tags, np.ones(len(tags)), offsets[i], labels)
            decoded = {(s["start"], s["end"], s["label"]) for s in decoded}
            kept += len(decoded & set(expected))
            total += len(expected)
    print(f"wnut17 sample: {kept}/{total} gold entities survive BIO encoding and decoding")
    assert total == 656 and kept / total >= 0.99


def test_agreement_is_the_same_span_set_and_recalls_are_per_type():
    """The retraining's drift report and guard: a row agrees when its spans are the reference's exactly
    (order aside); abstained references (None) are left out."""
    kind = Spans(task(), samples=3)
    ann = {"start": 0, "end": 3, "label": "person"}
    paris = {"start": 10, "end": 15, "label": "location"}
    targets = [[ann, paris], [ann], None, []]
    predictions = {"spans": [[paris, ann], [{**ann, "end": 4}], [], []]}
    assert kind.agreement(targets, predictions).tolist() == [True, False, True]
    report = kind.evaluate(targets, predictions)
    assert kind.class_recalls(report) == {"person": 0.5, "location": 1.0, "creative-work": 0.0}
