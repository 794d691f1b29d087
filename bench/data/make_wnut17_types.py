"""Build a multi-label set from WNUT-17: each sentence tagged with the entity types it mentions.

For every sentence of ``../shared/data/wnut17`` (the WNUT 2017 Emerging and Rare Entities splits,
CC BY 4.0, as converted there: tokens joined by single spaces, character spans from the BIO tags),
``labels`` is the set of the types of its gold spans, in the order of that folder's ``labels.json``,
and an empty list when it names no entity. ``id`` and ``text`` are kept as they are; tokens, tags and
spans are left out. Every sentence of the three official splits is kept, so the result is the full
set, not the sample that ``scripts/make_example_spans.py`` ships with the example config.

The three files are written only when together they stay under ``--max-bytes`` (3 MB), with a
``README.md`` stating their provenance, and never over other files unless ``--force``: the default
output folder holds the example's sample. Deterministic: running it again writes the same files.

    python bench/data/make_wnut17_types.py --out runs/data/wnut17_types [--shared ../shared/data/wnut17]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "test")
MAX_BYTES = 3_000_000

README = """# WNUT-17 entity types (multi-label)

Each line is `{{"id", "text", "labels"}}`: a sentence of WNUT-17 and the entity types it mentions, in
the order {types}; an empty list when it names no entity.

| split | sentences | {header} | 0 types | 1 type | 2+ types |
|---|---:|{align}---:|---:|---:|
{rows}

## Source and licence

- **WNUT 2017 Emerging and Rare Entities**: Derczynski, Nichols, van Erp, Limsopatham (2017),
  *Results of the WNUT2017 Shared Task on Novel and Emerging Entity Recognition*. Repository
  `leondz/emerging_entities_17`, commit `e52a2d2`, files `wnut17train.conll` (train),
  `emerging.dev.conll` (validation), `emerging.test.annotated` (test).
- Licence: **Creative Commons Attribution 4.0 International (CC BY 4.0)**,
  https://creativecommons.org/licenses/by/4.0/. Redistributed with attribution; the changes are below.
- Changes: derived from the conversion in `../shared/data/wnut17` (tokens joined by single spaces,
  character spans from the BIO tags, an `I-` tag that continues no span starting a new one). For
  each sentence of the three official splits, `labels` is the set of its gold spans' types; the
  tokens, tags and spans themselves are left out. `bench/data/make_wnut17_types.py` rebuilds these
  files exactly.
"""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def type_rows(rows: list[dict[str, Any]], types: list[str]) -> list[dict[str, Any]]:
    """``id``, ``text`` and ``labels`` (the types of the row's spans, in ``types`` order) per row."""
    out = []
    for row in rows:
        present = {span["label"] for span in row["spans"]}
        unknown = present - set(types)
        if unknown:
            raise ValueError(f"row id {row['id']!r} has entity types {sorted(unknown)} outside {types}")
        labels = [name for name in types if name in present]
        out.append({"id": row["id"], "text": row["text"], "labels": labels})
    return out


def summary(rows: list[dict[str, Any]], types: list[str]) -> dict[str, Any]:
    """Sentences per type, and how many sentences have 0, 1 or 2+ types."""
    per_type = Counter(label for row in rows for label in row["labels"])
    sizes = Counter(min(len(row["labels"]), 2) for row in rows)
    return {"sentences": len(rows), "per_type": {name: per_type[name] for name in types},
            "types_0": sizes[0], "types_1": sizes[1], "types_2_plus": sizes[2]}


def encode(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def readme(summaries: dict[str, dict[str, Any]], types: list[str]) -> str:
    def share(count: int, total: int) -> str:
        return f"{count} ({100 * count / total:.1f}%)" if total else "0"

    lines = []
    for split, s in summaries.items():
        cells = [str(s["per_type"][name]) for name in types]
        sizes = [share(s[key], s["sentences"]) for key in ("types_0", "types_1", "types_2_plus")]
        lines.append(f"| {split} | {s['sentences']} | {' | '.join(cells + sizes)} |")
    return README.format(types=", ".join(f"`{name}`" for name in types), header=" | ".join(types),
                         align="---:|" * len(types), rows="\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared/data/wnut17")
    parser.add_argument("--out", type=Path, default=ROOT / "examples/data/wnut17_types")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    parser.add_argument("--force", action="store_true", help="replace files the output folder already holds")
    args = parser.parse_args()

    types = [label["name"] for label in json.loads((args.shared / "labels.json").read_text(encoding="utf-8"))]
    splits = {split: type_rows(read_jsonl(args.shared / f"{split}.jsonl"), types) for split in SPLITS}
    summaries = {split: summary(rows, types) for split, rows in splits.items()}
    blobs = {split: encode(rows) for split, rows in splits.items()}
    total = sum(len(blob) for blob in blobs.values())
    for split, s in summaries.items():
        n = s["sentences"]
        sizes = ", ".join(f"{what} {s[key]} ({s[key] / n:.1%})" for what, key in
                          (("0 types", "types_0"), ("1 type", "types_1"), ("2+ types", "types_2_plus")))
        print(f"{split}: {n} sentences, {len(blobs[split])} bytes; per type {s['per_type']}; {sizes}")
    print(f"total: {total} bytes (limit {args.max_bytes})")
    if total >= args.max_bytes:
        print(f"not written: {total} bytes is over the {args.max_bytes} limit", file=sys.stderr)
        return 1
    files = {**{f"{split}.jsonl": blob for split, blob in blobs.items()},
             "README.md": readme(summaries, types).encode("utf-8")}
    existing = [name for name, blob in files.items()
                if (args.out / name).exists() and (args.out / name).read_bytes() != blob]
    if existing and not args.force:
        print(f"not written: {args.out} already holds other {', '.join(existing)} "
              "(pass --force to replace them)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (args.out / name).write_bytes(blob)
    print(f"wrote {', '.join(files)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
