"""Build the example data that ships with the project (examples/data/banking_support/).

A small, fixed sample of Banking77 (CC BY 4.0) for the example config and smoke mode, so a
fresh clone runs the main job with nothing beside it. It is built from the normalised copy in
``../shared/data/banking77`` (see that folder's README for the source commit) and is
deterministic: running this again writes the same files.

    python scripts/make_example_data.py [--shared ../shared/data/banking77]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

# Eight card-support intents a support desk would route to different teams.
INTENTS = [
    "card_arrival", "activate_my_card", "lost_or_stolen_card", "pin_blocked",
    "declined_card_payment", "card_payment_fee_charged", "exchange_rate", "terminate_account",
]
TRAIN_PER_INTENT = 60  # unlabelled corpus for the teacher (gold labels kept for reference)
VALIDATION_PER_INTENT = 10  # carved from the official test split, disjoint from test
TEST_PER_INTENT = 25
SEED = 13


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample(rows: list[dict], per_intent: int, rng: random.Random) -> list[dict]:
    chosen = []
    for intent in INTENTS:
        of_intent = [row for row in rows if row["label"] == intent]
        if len(of_intent) < per_intent:
            raise SystemExit(f"{intent}: only {len(of_intent)} rows, {per_intent} wanted")
        chosen += rng.sample(of_intent, per_intent)
    rng.shuffle(chosen)
    return chosen


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/banking77")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples/data/banking_support")
    args = parser.parse_args()
    rng = random.Random(SEED)
    train = sample(read(args.shared / "train.jsonl"), TRAIN_PER_INTENT, rng)
    held_out = sample(read(args.shared / "test.jsonl"), VALIDATION_PER_INTENT + TEST_PER_INTENT, rng)
    validation_ids = set()
    for intent in INTENTS:
        validation_ids.update([row["id"] for row in held_out if row["label"] == intent][:VALIDATION_PER_INTENT])
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.jsonl", train)
    write(args.out / "validation.jsonl", [row for row in held_out if row["id"] in validation_ids])
    write(args.out / "test.jsonl", [row for row in held_out if row["id"] not in validation_ids])
    print(f"wrote {len(train)} train, {len(validation_ids)} validation, {len(held_out) - len(validation_ids)} test rows "
          f"to {args.out}")


if __name__ == "__main__":
    main()
