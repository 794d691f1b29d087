"""Where a rounds run keeps its files, in one place.

Under ``rounds.output`` (local or s3://)::

    manifest.json, config.yaml, summary.md, metrics.png, lease.json
    model/                    the best round's student (published whole, pipeline.model_store)
    seed/                     seed synthesis: round 0's training data (rounds.seed_synthesis)
    rounds/<r>/extra/         the examples the teacher wrote in round r: candidates, filtered data, report
    rounds/<r>/relabelled/    the labelling job's output on round r's examples (PromptMix, FreeAL)
    rounds/<r>/relabel.json   PromptMix: how the relabels compare with the intended labels
    rounds/<r>/student/       round r's distillation run (student-intended/: PromptMix's comparison)
    rounds/<r>/labels/        FreeAL: the teacher's labels of round r (round 0: of the corpus)
    rounds/<r>/warmup/        FreeAL: the warm-up student on them
    rounds/<r>/selection/     FreeAL: the small-loss split, the student's data, the rows to relabel
    rounds/<r>/merge.json     FreeAL: what round r's relabelling changed
    rounds/0/demos.json       FreeAL: the demos the teacher wrote itself
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline import storage
from pipeline.config import Config


@dataclasses.dataclass(frozen=True)
class RoundsLayout:
    fs: Any
    root: str
    uri: str  # rounds.output as given (what jobs and the manifest name)

    @classmethod
    def of(cls, config: Config) -> "RoundsLayout":
        fs, root = storage.resolve(config.rounds.output, config.storage)
        return cls(fs, root, config.rounds.output.rstrip("/"))

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def round_dir(self, r: int, *parts: str) -> tuple[str, ...]:
        return ("rounds", str(r), *parts)


def base_labels_uri(config: Config) -> str:
    """Round 0's training data: the seed synthesis output, or the labelling job's output."""
    if config.rounds.seed_synthesis:
        return RoundsLayout.of(config).uri_of("seed")
    return config.distill.labels or config.data.output


def round_uri(config: Config, r: int, *parts: str) -> str:
    """URI of ``rounds/<r>/<parts...>`` under ``rounds.output``."""
    layout = RoundsLayout.of(config)
    return layout.uri_of(*layout.round_dir(r, *parts))


def extra_uri(config: Config, r: int) -> str:
    return round_uri(config, r, "extra")


def student_uri(config: Config, r: int, arm: str = "") -> str:
    """Round r's student; ``arm="intended"``: the PromptMix comparison trained without relabelling."""
    return round_uri(config, r, f"student-{arm}" if arm else "student")


def relabelled_uri(config: Config, r: int) -> str:
    """PromptMix and FreeAL: the labelling job's output on round r's examples to relabel."""
    return round_uri(config, r, "relabelled")


def labels_uri(config: Config, r: int) -> str:
    return round_uri(config, r, "labels")


def warmup_uri(config: Config, r: int) -> str:
    return round_uri(config, r, "warmup")


def selection_uri(config: Config, r: int) -> str:
    return round_uri(config, r, "selection")


def demos_path(config: Config) -> tuple[Any, str]:
    layout = RoundsLayout.of(config)
    return layout.fs, layout.path(*layout.round_dir(0, "demos.json"))
