"""FreeAL: the teacher labels, the student filters by small loss, clean rows become demos, relabel.

Round 0 has the teacher write its own demos (``demos``) and label the corpus with them (``label``).
Every round trains a student on the teacher's labels (``warmup``), splits them into clean and noisy
by the student's loss (``select``) and trains the round's student on the clean rows plus confident
pseudo-labels (``train``). Round r >= 1 first has the teacher relabel round r-1's noisy rows with
demos chosen per text (``relabel``) and merges the new labels in (``merge``). The steps and the
paths they read and write are in :mod:`pipeline.freeal_steps` (``select``: :mod:`pipeline.freeal_select`).
"""

from __future__ import annotations

from typing import Any, Callable

from pipeline import freeal_select, freeal_steps
from pipeline.config import Config
from pipeline.corpus import open_corpus
from pipeline.evaluate import load_gold
from pipeline.rounds_layout import labels_uri, relabelled_uri, round_uri, selection_uri, student_uri, warmup_uri
from pipeline.strategies.base import Rounds, Strategy, override, relabel_overrides

SELECTION_FIELDS = ("labelled_rows", "abstained_rows", "clean", "noisy", "pseudo_labelled", "to_relabel",
                    "classes_without_clean_rows", "teacher_accuracy")


class FreeAL(Strategy):
    name = "freeal"

    def steps(self) -> dict[str, Callable[..., dict[str, Any]]]:
        return {"demos": freeal_steps.run_demos, "select": freeal_select.run_select, "merge": freeal_steps.run_merge}

    def preflight(self, config: Config) -> None:
        open_corpus(config.data, config.storage)  # round 0 labels data.input itself
        if config.rounds.freeal_gold:
            load_gold(config.rounds.freeal_gold, config.task.label_names, "rounds.freeal_gold", config.storage)

    def run(self, rounds: Rounds) -> str:
        config = rounds.config
        rounds.step(0, "demos", rounds.round_step("demos", 0))
        rounds.step(0, "label", rounds.job("label.py", [
            freeal_steps.task_demos_override(config), override("data.output", labels_uri(config, 0))]))
        self.student(rounds, 0)
        for r in range(1, config.rounds.rounds + 1):
            stop = rounds.stop_reason(r)
            if stop:
                return stop
            previous = selection_uri(config, r - 1)
            if rounds.report(previous, "report.json")["to_relabel"] == 0:
                return f"round {r - 1}'s selection left no noisy row to relabel"
            rounds.step(r, "relabel", rounds.job("label.py", relabel_overrides(
                f"{previous}/relabel_input", relabelled_uri(config, r)) + [override("data.demos_column", "demos")]))
            rounds.step(r, "merge", rounds.round_step("merge", r))
            self.student(rounds, r)
        return f"ran all {config.rounds.rounds} rounds"

    def student(self, rounds: Rounds, r: int) -> None:
        """Warm-up on the teacher's labels, small-loss selection, the round's student on the selection."""
        config = rounds.config
        rounds.step(r, "warmup", rounds.job("distill.py", [
            override("distill.labels", labels_uri(config, r)), override("distill.extra_labels", []),
            override("distill.output", warmup_uri(config, r))]))
        rounds.step(r, "select", rounds.round_step("select", r))
        data = f"{selection_uri(config, r)}/student_data"
        rounds.step(r, "train", rounds.job("distill.py", [
            override("distill.labels", data), override("distill.extra_labels", []),
            override("distill.output", student_uri(config, r))]))
        changed = rounds.report(round_uri(config, r), "merge.json")["labels_changed"] if r > 0 else 0
        rounds.record_round(r, added=changed, trained=True, data=[data])

    def round_info(self, rounds: Rounds, r: int, trained: bool, added: int) -> dict[str, Any]:
        if not trained:
            return {}
        selection = rounds.report(selection_uri(rounds.config, r), "report.json")
        warmup = rounds.report(warmup_uri(rounds.config, r), "report.json")
        return {"freeal": {"labels_changed": added, **{key: selection[key] for key in SELECTION_FIELDS},
                           "warmup_evaluation": warmup["evaluation"]}}
