"""Build the spans and multi-label example data that ships with the project.

A small, fixed sample of WNUT-17 (CC BY 4.0) for the spans example config and its smoke mode,
built from the copy in ``../shared/data/wnut17`` (see ``../shared/data/README.md`` for the source
commit). ``examples/data/wnut17/``: each line keeps ``id``, ``text`` and ``spans`` (character
offsets, end exclusive); the token and BIO columns are left out. ``examples/data/wnut17_types/``:
the same sentences with ``labels``, the entity types each mentions (in the order of
``labels.json``; empty when it names none), for the multi-label example. Deterministic: running it
again writes the same files.

    python scripts/make_example_spans.py [--shared ../shared/data/wnut17]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SIZES = {"train": 480, "validation": 150, "test": 300}  # train: the corpus the teacher labels
SEED = 17


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/wnut17")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples/data")
    args = parser.parse_args()
    rng = random.Random(SEED)
    types = [label["name"] for label in json.loads((args.shared / "labels.json").read_text())]
    for folder in ("wnut17", "wnut17_types"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    for split, size in SIZES.items():
        rows = rng.sample(read(args.shared / f"{split}.jsonl"), size)
        with (args.out / "wnut17" / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"id": row["id"], "text": row["text"], "spans": row["spans"]},
                                   ensure_ascii=False) + "\n")
        with (args.out / "wnut17_types" / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                present = {span["label"] for span in row["spans"]}
                f.write(json.dumps({"id": row["id"], "text": row["text"],
                                    "labels": [name for name in types if name in present]},
                                   ensure_ascii=False) + "\n")
        entities = sum(len(row["spans"]) for row in rows)
        tagged = sum(1 for row in rows if row["spans"])
        print(f"{split}: {size} sentences, {entities} entities, {tagged} sentences with at least one type")


if __name__ == "__main__":
    main()
