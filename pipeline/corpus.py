"""Reading the unlabelled corpus: files, columns, and the per-row checks.

The corpus is a local path or s3:// URI, a file or a prefix, in parquet,
jsonl or csv. Columns are checked on every file before any engine starts; a
row that cannot be labelled is not dropped but quarantined with its reason:
no id, no text, a text that is not a string, blank, longer than
``MAX_TEXT_CHARS``, holding a NUL character or a lone surrogate escape
(``"\ud800"``, which no UTF-8 file can store); a line that is not valid
UTF-8, not JSON, or a CSV line with the wrong number of fields; an id used
twice. jsonl and csv files are split into lines by this module (on ``\n``
only: Python's ``splitlines`` would also cut a line at a U+2028 inside a JSON
string).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
from typing import Any, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import DataConfig, StorageConfig

HEADER_READERS = 32  # input files whose headers are read at once
MAX_TEXT_CHARS = 1_000_000  # a longer "text" is a broken file, not a document: quarantined
LINES_PER_BLOCK = 10_000  # jsonl/csv rows per block handed on from one file
SUFFIXES = {"parquet": (".parquet",), "jsonl": (".jsonl", ".json"), "csv": (".csv",)}


class InputError(ValueError):
    """The corpus cannot be read as configured (no files, missing column, mixed formats)."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    fs: pafs.FileSystem
    files: list[str]
    format: str
    id_column: str
    text_column: str
    demos_column: Optional[str] = None


def open_corpus(data: DataConfig, storage_config: StorageConfig) -> Corpus:
    """Find the input files and check that each has the id and text columns."""
    fs, path = storage.resolve(data.input, storage_config)
    suffixes = SUFFIXES.get(data.format, tuple(s for group in SUFFIXES.values() for s in group))
    files = storage.list_files(fs, path, suffixes)
    if not files:
        raise InputError(f"data.input: no {'/'.join(suffixes)} files at {data.input}")
    fmt = data.format if data.format != "auto" else _detect_format(files, data.input)
    if data.demos_column and fmt != "parquet":
        raise InputError(f"data.demos_column: per-row demos need parquet input, got {fmt} at {data.input}")
    corpus = Corpus(fs, files, fmt, data.id_column, data.text_column, data.demos_column)
    checked = [("data.id_column", data.id_column), ("data.text_column", data.text_column)]
    if data.demos_column:
        checked.append(("data.demos_column", data.demos_column))
    # Headers only, read in parallel: on S3 each is a round trip, and a corpus may have many files.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(HEADER_READERS, len(files))) as pool:
        headers = list(pool.map(lambda f: _file_columns(corpus, f), files))
    for file, columns in zip(files, headers):
        for key, column in checked:
            if columns is not None and column not in columns:
                raise InputError(
                    f"{key}: column {column!r} not found in {_display(data.input, file)} (columns: {columns})"
                )
    return corpus


def _detect_format(files: list[str], uri: str) -> str:
    formats = {fmt for f in files for fmt, sfx in SUFFIXES.items() if f.endswith(sfx)}
    if len(formats) != 1:
        raise InputError(f"data.input: {uri} mixes formats {sorted(formats)}; set data.format")
    return formats.pop()


def _file_columns(corpus: Corpus, file: str) -> Optional[list[str]]:
    """Column names of one file, read from its header only (None: empty file)."""
    if corpus.format == "parquet":
        return pq.read_schema(file, filesystem=corpus.fs).names
    with corpus.fs.open_input_stream(file) as stream:
        head = stream.read(1 << 20).decode("utf-8", errors="replace")
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        return None
    if corpus.format == "csv":
        return next(csv.reader(io.StringIO(lines[0])))
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError as err:
        raise InputError(f"data.input: first line of {file} is not JSON: {err}") from err
    if not isinstance(first, dict):
        raise InputError(f"data.input: first line of {file} is not a JSON object")
    return list(first)


def _display(uri: str, file: str) -> str:
    return f"s3://{file}" if storage.is_s3(uri) else file


def check_row(raw_id: Any, raw_text: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """Normalise one row to ``(id, text, problem)``; ``problem`` is None for a good row.

    Integer ids are accepted and stored as strings; ids of other types, and
    texts that are missing, not strings, or only whitespace, are problems.
    """
    row_id = None
    if isinstance(raw_id, str) and raw_id != "":
        row_id = raw_id
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        row_id = str(raw_id)
    text = raw_text if isinstance(raw_text, str) else _raw(raw_text)
    if raw_id is None or raw_id == "":
        return None, text, "missing id"
    if row_id is None:
        return _raw(raw_id), text, f"id is not a string or integer ({type(raw_id).__name__})"
    if not _encodable(row_id):
        return row_id, text, "id is not valid Unicode (a lone surrogate)"
    if raw_text is None:
        return row_id, None, "missing text"
    if not isinstance(raw_text, str):
        return row_id, text, f"text is not a string ({type(raw_text).__name__})"
    if not _encodable(raw_text):
        return row_id, raw_text, "text is not valid Unicode (a lone surrogate)"
    if not raw_text.strip():
        return row_id, raw_text, "empty text"
    if "\x00" in raw_text:
        return row_id, raw_text, "text holds a NUL character"
    if len(raw_text) > MAX_TEXT_CHARS:
        return row_id, raw_text[:1000], f"text longer than {MAX_TEXT_CHARS} characters ({len(raw_text)})"
    return row_id, raw_text, None


def _encodable(value: Optional[str]) -> bool:
    if value is None:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(value: Optional[str]) -> Optional[str]:
    """``value``, with any lone surrogate written as its ``\\udxxx`` escape so that it can be stored."""
    if _encodable(value):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _raw(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


ROWS = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("problem", pa.string()), ("source", pa.string())]
)


# Every character Python's str.isspace() accepts (RE2 syntax): a text made only of
# these may be "empty text", so its batch takes the row-by-row path.
_MAYBE_BLANK = r"^[\t\n\x0b\x0c\r\x1c-\x1f\x85\p{Z}]*$"


def checked_columns(ids: pa.Array, texts: pa.Array, sources: pa.Array) -> pa.Table:
    """:func:`checked_batch` on arrow columns, vectorised when no row can have a problem.

    String or integer ids and string texts with no null, no empty id and no
    blank text (the common case) are checked without leaving arrow; any other
    batch goes row by row through :func:`check_row`, so both paths agree.
    """
    id_type, text_type = ids.type, texts.type
    ids_ok = pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or (
        pa.types.is_integer(id_type))
    texts_ok = pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
    if ids_ok and texts_ok and ids.null_count == 0 and texts.null_count == 0:
        id_strings = pc.cast(ids, pa.string())
        suspect = pc.or_(pc.equal(id_strings, ""), pc.match_substring_regex(texts, _MAYBE_BLANK))
        suspect = pc.or_(suspect, pc.or_(pc.match_substring(texts, "\x00"),
                                         pc.greater(pc.utf8_length(texts), MAX_TEXT_CHARS)))
        if not pc.any(suspect).as_py():
            return pa.Table.from_arrays(
                [id_strings, pc.cast(texts, pa.string()), pa.nulls(len(ids), pa.string()),
                 pc.cast(sources, pa.string())], schema=ROWS)
    return checked_batch(ids.to_pylist(), texts.to_pylist(), sources.to_pylist())


def checked_batch(ids: list, texts: list, sources: list) -> pa.Table:
    """Apply :func:`check_row` to a batch, keeping each row's source file."""
    out: dict[str, list] = {"id": [], "text": [], "problem": [], "source": []}
    for raw_id, raw_text, source in zip(ids, texts, sources):
        row_id, text, problem = check_row(raw_id, raw_text)
        out["id"].append(_storable(row_id))
        out["text"].append(_storable(text))
        out["problem"].append(problem)
        out["source"].append(source)
    return pa.Table.from_pydict(out, schema=ROWS)


def parse_jsonl_batch(lines: list, sources: list[str], id_column: str, text_column: str) -> pa.Table:
    """Parse jsonl lines (str, or bytes still to decode) one by one, so a malformed line or a
    mistyped field becomes a quarantined row instead of failing the whole file."""
    ids, texts, problems = [], [], []
    for line in lines:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                ids.append(None)
                texts.append(line.decode("utf-8", "replace"))
                problems.append(f"line is not valid UTF-8 (byte 0x{line[err.start]:02x} at offset {err.start})")
                continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            record, problems_here = None, f"line is not valid JSON ({err.msg})"
        else:
            problems_here = None if isinstance(record, dict) else "line is not a JSON object"
        if problems_here:
            ids.append(None)
            texts.append(line)
            problems.append(problems_here)
            continue
        ids.append(record.get(id_column))
        texts.append(record.get(text_column))
        problems.append(None)
    table = checked_batch(ids, texts, sources)
    # Keep the parse error where there was one; check_row only saw empty values.
    merged = [p or q for p, q in zip(problems, table.column("problem").to_pylist())]
    return table.set_column(2, "problem", pa.array(merged, pa.string()))


def check_demos(raw: Any, label_names: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """A row's own demos as canonical JSON ``[{"text", "label"}, ...]``, or the problem with them."""
    try:
        demos = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        demos = None
    if not isinstance(demos, list) or not all(
        isinstance(d, dict) and isinstance(d.get("text"), str) and isinstance(d.get("label"), str) for d in demos
    ):
        return None, 'demos are not a JSON list of {"text", "label"}'
    unknown = sorted({d["label"] for d in demos} - set(label_names))
    if unknown:
        return None, f"demos have labels outside the label set: {unknown}"
    return json.dumps([{"text": d["text"], "label": d["label"]} for d in demos], ensure_ascii=False), None


def read_corpus(corpus: Corpus, label_names: Sequence[str] = ()) -> Any:
    """The corpus as a Ray Dataset of checked rows (id, text, problem, source[, demos]).

    With ``corpus.demos_column`` each row also carries its demos (checked against
    ``label_names``; a row with unusable demos is a problem row, quarantined).
    """
    import ray.data

    id_col, text_col, demos_col = corpus.id_column, corpus.text_column, corpus.demos_column

    def check(batch: pa.Table) -> pa.Table:
        table = checked_columns(_array(batch.column(id_col)), _array(batch.column(text_col)),
                                _array(batch.column("path")))
        if not demos_col:
            return table
        checked = [check_demos(raw, label_names) for raw in batch.column(demos_col).to_pylist()]
        problems = [p or q for p, (_, q) in zip(table.column("problem").to_pylist(), checked)]
        table = table.set_column(2, "problem", pa.array(problems, pa.string()))
        return table.append_column("demos", pa.array([d for d, _ in checked], pa.string()))

    if corpus.format in ("jsonl", "csv"):
        # Whole files, split into rows here (as Ray's own text and CSV readers also hold a file at once).
        files = ray.data.read_binary_files(corpus.files, filesystem=corpus.fs, include_paths=True)
        rows = jsonl_file_rows if corpus.format == "jsonl" else csv_file_rows
        return files.map_batches(rows, batch_size=1, batch_format="pyarrow",
                                 fn_kwargs={"id_column": id_col, "text_column": text_col})
    ds = ray.data.read_parquet(corpus.files, filesystem=corpus.fs, include_paths=True).select_columns(
        [id_col, text_col, *([demos_col] if demos_col else []), "path"]
    )
    return ds.map_batches(check, batch_format="pyarrow")


def _lines(data: bytes) -> Iterator[bytes]:
    """The non-blank lines of a file, split on ``\n`` only (a trailing ``\r`` dropped)."""
    for line in io.BytesIO(data):
        line = line.rstrip(b"\n").removesuffix(b"\r")
        if line.strip():
            yield line


def jsonl_file_rows(files: pa.Table, id_column: str, text_column: str) -> Iterator[pa.Table]:
    """Checked rows of whole jsonl files (``bytes``, ``path``), ``LINES_PER_BLOCK`` lines a table."""
    for data, path in zip(files.column("bytes").to_pylist(), files.column("path").to_pylist()):
        batch: list[bytes] = []
        for line in _lines(data):
            batch.append(line)
            if len(batch) == LINES_PER_BLOCK:
                yield parse_jsonl_batch(batch, [path] * len(batch), id_column, text_column)
                batch = []
        if batch:
            yield parse_jsonl_batch(batch, [path] * len(batch), id_column, text_column)


def csv_file_rows(files: pa.Table, id_column: str, text_column: str) -> Iterator[pa.Table]:
    """Checked rows of whole csv files (``bytes``, ``path``): a line with the wrong number of fields
    and a field that is not valid UTF-8 are quarantined rows, not a failed file."""
    import pyarrow.csv as pacsv

    for data, path in zip(files.column("bytes").to_pylist(), files.column("path").to_pylist()):
        ragged: list[Any] = []

        def keep_aside(row: Any) -> str:
            ragged.append(row)
            return "skip"

        table = pacsv.read_csv(
            pa.BufferReader(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep_aside),
            convert_options=pacsv.ConvertOptions(column_types={id_column: pa.binary(), text_column: pa.binary()},
                                                 include_columns=[id_column, text_column], strings_can_be_null=False),
        )
        for start in range(0, table.num_rows, LINES_PER_BLOCK):
            part = table.slice(start, LINES_PER_BLOCK)
            yield _checked_csv(_array(part.column(id_column)), _array(part.column(text_column)), path)
        if ragged:
            yield pa.Table.from_pydict({
                "id": [None] * len(ragged),
                "text": [_storable(row.text) for row in ragged],
                "problem": [f"CSV line has {row.actual_columns} "
                            f"fields, expected {row.expected_columns}" for row in ragged],
                "source": [path] * len(ragged),
            }, schema=ROWS)


def _checked_csv(ids: pa.Array, texts: pa.Array, path: str) -> pa.Table:
    """Binary id and text columns decoded as UTF-8 (vectorised; a field that is not valid UTF-8 makes
    its row a problem row) and checked."""
    sources = pa.array([path] * len(ids), pa.string())
    try:
        return checked_columns(ids.cast(pa.string()), texts.cast(pa.string()), sources)
    except pa.ArrowInvalid:  # some field is not UTF-8: row by row
        pass
    decoded = [[None, None] for _ in range(len(ids))]
    problems: list[Optional[str]] = [None] * len(ids)
    for i, (raw_id, raw_text) in enumerate(zip(ids.to_pylist(), texts.to_pylist())):
        for j, (name, raw) in enumerate((("id", raw_id), ("text", raw_text))):
            try:
                decoded[i][j] = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                decoded[i][j] = raw.decode("utf-8", "replace")
                problems[i] = problems[i] or (
                    f"{name} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})")
    table = checked_batch([d[0] for d in decoded], [d[1] for d in decoded], sources.to_pylist())
    merged = [p or q for p, q in zip(problems, table.column("problem").to_pylist())]
    return table.set_column(2, "problem", pa.array(merged, pa.string()))


def _array(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
