import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import DataConfig, StorageConfig
from pipeline.corpus import InputError, check_demos, check_row, open_corpus, parse_jsonl_batch


@pytest.mark.parametrize(
    "raw_id, raw_text, expected",
    [
        ("a1", "fine text", ("a1", "fine text", None)),
        (7, "int ids are kept as strings", ("7", "int ids are kept as strings", None)),
        (None, "x", (None, "x", "missing id")),
        ("", "x", (None, "x", "missing id")),
        (1.5, "x", ("1.5", "x", "id is not a string or integer (float)")),
        ("a2", None, ("a2", None, "missing text")),
        ("a3", "   \n", ("a3", "   \n", "empty text")),
        ("a4", 42, ("a4", "42", "text is not a string (int)")),
        ("a5", ["a", "b"], ("a5", '["a", "b"]', "text is not a string (list)")),
    ],
)
def test_check_row(raw_id, raw_text, expected):
    assert check_row(raw_id, raw_text) == expected


def test_parse_jsonl_batch_keeps_bad_lines_with_reason():
    lines = [
        json.dumps({"id": "a", "text": "good"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "b"}),
    ]
    table = parse_jsonl_batch(lines, ["f.jsonl"] * 4, "id", "text")
    assert table.column("id").to_pylist() == ["a", None, None, "b"]
    problems = table.column("problem").to_pylist()
    assert problems[0] is None
    assert problems[1].startswith("line is not valid JSON")
    assert problems[2] == "line is not a JSON object"
    assert problems[3] == "missing text"
    assert table.column("text").to_pylist()[1] == "{not json"
    assert table.column("source").to_pylist() == ["f.jsonl"] * 4


def data(input, **kw):
    return DataConfig(input=str(input), output="unused", **kw)


def test_missing_column_names_column_and_file(tmp_path):
    good = tmp_path / "corpus" / "a.jsonl"
    bad = tmp_path / "corpus" / "b.jsonl"
    good.parent.mkdir()
    good.write_text(json.dumps({"id": "1", "text": "t"}) + "\n")
    bad.write_text(json.dumps({"id": "2", "body": "t"}) + "\n")
    with pytest.raises(InputError) as err:
        open_corpus(data(good.parent), StorageConfig())
    assert "data.text_column: column 'text' not found in" in str(err.value)
    assert str(bad) in str(err.value) and "['id', 'body']" in str(err.value)


def test_missing_id_column_in_csv_and_parquet(tmp_path):
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("key,text\n1,hello\n")
    with pytest.raises(InputError, match=r"data.id_column: column 'id' not found in .*c\.csv"):
        open_corpus(data(csv_file), StorageConfig())
    pq_file = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["1"], "content": ["x"]}), pq_file)
    with pytest.raises(InputError, match=r"data.text_column: column 'text' not found in .*p\.parquet"):
        open_corpus(data(pq_file), StorageConfig())


def test_custom_column_names_and_formats(tmp_path):
    pq_file = tmp_path / "p.parquet"
    pq.write_table(pa.table({"doc": ["1"], "body": ["x"]}), pq_file)
    corpus = open_corpus(data(pq_file, id_column="doc", text_column="body"), StorageConfig())
    assert corpus.format == "parquet" and corpus.files == [str(pq_file)]


def test_no_files_and_mixed_formats(tmp_path):
    with pytest.raises(InputError, match="data.input: no .* files at"):
        open_corpus(data(tmp_path), StorageConfig())
    (tmp_path / "a.csv").write_text("id,text\n1,x\n")
    (tmp_path / "b.jsonl").write_text('{"id": "2", "text": "y"}\n')
    with pytest.raises(InputError, match=r"mixes formats \['csv', 'jsonl'\]; set data.format"):
        open_corpus(data(tmp_path), StorageConfig())
    assert open_corpus(data(tmp_path, format="csv"), StorageConfig()).files == [str(tmp_path / "a.csv")]


def test_per_row_demos_are_checked(tmp_path):
    labels = ["negative", "positive"]
    good = json.dumps([{"text": "Costs rose.", "label": "negative", "extra": 1}])
    assert check_demos(good, labels) == ('[{"text": "Costs rose.", "label": "negative"}]', None)
    assert check_demos("[]", labels) == ("[]", None)
    for raw in ("not json", '{"text": "x", "label": "negative"}', '[{"text": "x"}]', None):
        assert check_demos(raw, labels) == (None, 'demos are not a JSON list of {"text", "label"}'), raw
    assert check_demos('[{"text": "x", "label": "great"}]', labels) == (
        None, "demos have labels outside the label set: ['great']")

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"id": "1", "text": "x", "demos": "[]"}\n')
    with pytest.raises(InputError, match="data.demos_column: per-row demos need parquet input, got jsonl"):
        open_corpus(data(jsonl, demos_column="demos"), StorageConfig())
    pq_file = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["1"], "text": ["x"]}), pq_file)
    with pytest.raises(InputError, match=r"data.demos_column: column 'demos' not found in .*p\.parquet"):
        open_corpus(data(pq_file, demos_column="demos"), StorageConfig())


def _rows(fn, data: bytes) -> list[dict]:
    files = pa.table({"bytes": [data], "path": ["corpus/f"]})
    return [row for table in fn(files, "id", "text") for row in table.to_pylist()]


def test_jsonl_rows_quarantine_what_cannot_be_stored_or_labelled():
    from pipeline.corpus import MAX_TEXT_CHARS, jsonl_file_rows

    lines = [
        json.dumps({"id": "ok", "text": "a line\u2028with a line separator"}, ensure_ascii=False).encode(),
        b'{"id": "surrogate", "text": "broken \\ud800 escape"}',
        '{"id": "latin1", "text": "caf\u00e9"}'.encode("latin-1"),
        json.dumps({"id": "nul", "text": "a\u0000b"}).encode(),
        json.dumps({"id": "huge", "text": "x" * (MAX_TEXT_CHARS + 1)}).encode(),
        b"   ",  # blank lines are skipped, as Ray's text reader does
        json.dumps({"id": "crlf", "text": "windows line"}).encode() + b"\r",
    ]
    rows = _rows(jsonl_file_rows, b"\n".join(lines) + b"\n")
    assert [row["id"] for row in rows] == ["ok", "surrogate", None, "nul", "huge", "crlf"]
    problems = {row["id"] or "latin1": row["problem"] for row in rows}
    assert problems == {
        "ok": None, "crlf": None,
        "surrogate": "text is not valid Unicode (a lone surrogate)",
        "latin1": "line is not valid UTF-8 (byte 0xe9 at offset 29)",
        "nul": "text holds a NUL character",
        "huge": f"text longer than {MAX_TEXT_CHARS} characters ({MAX_TEXT_CHARS + 1})",
    }
    assert rows[0]["text"] == "a line\u2028with a line separator"  # one row: not split at U+2028
    assert rows[1]["text"] == "broken \\ud800 escape"  # stored with the surrogate escaped
    assert len(rows[4]["text"]) == 1000 and all(row["source"] == "corpus/f" for row in rows)
    pa.Table.from_pylist(rows)  # every value can be stored


def test_csv_rows_quarantine_ragged_lines_and_bad_bytes_and_keep_quoted_newlines():
    from pipeline.corpus import csv_file_rows

    data = (b'id,text\n'
            b'1,plain\n'
            b'2,"quoted, with a comma\nand a newline"\n'
            b'3,one,too many\n'
            b'4,caf\xe9\n'
            b'5,\n'
            b'6\n')
    rows = _rows(csv_file_rows, data)
    by_text = {row["text"]: row for row in rows}
    assert by_text["plain"]["problem"] is None and by_text["plain"]["id"] == "1"
    assert by_text["quoted, with a comma\nand a newline"]["problem"] is None
    assert by_text["caf\ufffd"]["problem"] == "text is not valid UTF-8 (byte 0xe9 at offset 3)"
    assert next(row for row in rows if row["id"] == "5")["problem"] == "empty text"
    ragged = sorted((row["text"], row["problem"]) for row in rows if row["id"] is None)
    assert ragged == [("3,one,too many", "CSV line has 3 fields, expected 2"),  # no line numbers: quoted newlines
                      ("6", "CSV line has 1 fields, expected 2")]
    assert len(rows) == 6  # every row accounted for
