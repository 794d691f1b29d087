"""Error extrapolation (S3, "Synthesis Step by Step").

Round 0 trains the student on the labelling job's output (or on seed synthesis: ``seed``). Round
r >= 1: the teacher writes ``rounds.examples_per_error`` new examples like each validation example
round r-1's student got wrong (``synthesize``, reading round r-1's validation predictions and
writing ``rounds/r/extra/candidates``); they are filtered (``filter``: ``rounds/r/extra/data``),
merged with all earlier training data, and the student is retrained and evaluated (``train``, the
distillation job unchanged: ``rounds/r/student``).
"""

from __future__ import annotations

from typing import Any, Callable

from pipeline import storage
from pipeline.config import Config, ConfigError
from pipeline.round_steps import run_filter, run_seed, run_synthesize
from pipeline.rounds_layout import base_labels_uri, extra_uri, student_uri
from pipeline.strategies.base import Rounds, Strategy, override


class Extrapolation(Strategy):
    name = "extrapolation"
    write = "synthesize"  # the step that has the teacher write a round's examples

    def steps(self) -> dict[str, Callable[..., dict[str, Any]]]:
        return {"seed": run_seed, "synthesize": run_synthesize, "filter": run_filter}

    def preflight(self, config: Config) -> None:
        if config.rounds.seed_synthesis:
            return
        uri = base_labels_uri(config)
        fs, root = storage.resolve(uri, config.storage)
        if not storage.list_files(fs, storage.join(root, "data"), (".parquet",)):
            raise ConfigError(
                f"distill.labels: no labelled parquet under {uri}/data for round 0; run the labelling job "
                "first or set rounds.seed_synthesis: true"
            )

    def run(self, rounds: Rounds) -> str:
        settings = rounds.config.rounds
        if settings.seed_synthesis:
            rounds.step(0, "seed", rounds.round_step("seed", 0))
        self.train(rounds, 0)
        for r in range(1, settings.rounds + 1):
            stop = rounds.stop_reason(r)
            if stop:
                return stop
            rounds.step(r, self.write, rounds.round_step(self.write, r))
            rounds.step(r, "filter", rounds.round_step("filter", r))
            if self.kept(rounds, r) == 0:
                rounds.record_round(r, added=0, trained=False)
                return f"round {r}'s filtered synthesis added no examples"
            self.before_training(rounds, r)
            self.train(rounds, r)
        return f"ran all {settings.rounds} rounds"

    def before_training(self, rounds: Rounds, r: int) -> None:
        """Between round r's filter and its training (PromptMix relabels here)."""

    def kept(self, rounds: Rounds, r: int) -> int:
        return rounds.report(extra_uri(rounds.config, r), "report.json")["kept"]

    def train(self, rounds: Rounds, r: int, arm: str = "") -> None:
        """Train round r's student on round 0's data and every round's additions so far.

        ``arm="intended"`` (PromptMix): round r's examples with the labels they were written for, not
        the relabelled ones; recorded with round r's main student as the comparison.
        """
        config = rounds.config
        data = self.training_data(config, r, arm, lambda q: self.kept(rounds, q))
        overrides = [override("distill.labels", data[0]), override("distill.extra_labels", data[1:]),
                     override("distill.output", student_uri(config, r, arm))]
        rounds.step(r, f"train-{arm}" if arm else "train", rounds.job("distill.py", overrides))
        if not arm:
            rounds.record_round(r, added=0 if r == 0 else self.kept(rounds, r), trained=True, data=data)

    def training_data(self, config: Config, r: int, arm: str, kept: Callable[[int], int]) -> list[str]:
        """Round r's training data: round 0's labels, then each round's additions up to r that kept any.

        ``kept(q)``: the examples round q's filter kept. ``arm="intended"`` (PromptMix) takes round r's
        examples with the labels they were written for; earlier rounds count with their final labels.
        """
        return [base_labels_uri(config)] + [
            extra_uri(config, q) if arm == "intended" and q == r else self.added_data(config, q)
            for q in range(1, r + 1)
            if kept(q) > 0
        ]

    def added_data(self, config: Config, r: int) -> str:
        """What round r adds to the training data: its filtered examples."""
        return extra_uri(config, r)

    def round_info(self, rounds: Rounds, r: int, trained: bool, added: int) -> dict[str, Any]:
        if r == 0 and rounds.config.rounds.seed_synthesis:
            return {"added": rounds.report(rounds.layout.uri_of("seed"), "report.json")["kept"]}
        return {}
