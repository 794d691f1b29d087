"""PromptMix: examples near class boundaries, relabelled by the teacher.

Round r >= 1: the teacher writes examples mixing two classes (``mix``: ``rounds/r/extra/candidates``),
they are filtered (``filter``), the labelling job relabels them (``relabel``: its label replaces the
intended one, ``rounds/r/relabelled``), and the student is retrained on the relabelled data
(``train``) and, for comparison, on the intended labels (``train-intended``, with
``rounds.compare_without_relabelling``). Round 0 is error extrapolation's.
"""

from __future__ import annotations

from typing import Any, Callable

from pipeline import storage
from pipeline.round_steps import relabel_report, run_filter, run_mix, run_seed
from pipeline.rounds_layout import extra_uri, relabelled_uri, student_uri
from pipeline.strategies.base import Rounds, relabel_overrides
from pipeline.strategies.extrapolation import Extrapolation


class PromptMix(Extrapolation):
    name = "promptmix"
    write = "mix"

    def steps(self) -> dict[str, Callable[..., dict[str, Any]]]:
        return {"seed": run_seed, "mix": run_mix, "filter": run_filter}

    def added_data(self, config: Any, r: int) -> str:
        """Round r's examples with the labels the labelling job gave them."""
        return relabelled_uri(config, r)

    def before_training(self, rounds: Rounds, r: int) -> None:
        """The labelling job, unchanged, labels round r's filtered examples; then the comparison arm."""
        config, layout = rounds.config, rounds.layout
        rounds.step(r, "relabel", rounds.job("label.py", relabel_overrides(f"{extra_uri(config, r)}/data",
                                                                        relabelled_uri(config, r))))
        report = relabel_report(config, r)
        storage.write_json(layout.fs, layout.path(*layout.round_dir(r, "relabel.json")), report)
        rounds.log(f"[rounds] round {r} relabel: {report['relabelled']} of {report['examples']} examples got "
                   f"another label, {report['abstained']} abstained, {report['quarantined']} quarantined")
        if config.rounds.compare_without_relabelling:
            self.train(rounds, r, arm="intended")

    def round_info(self, rounds: Rounds, r: int, trained: bool, added: int) -> dict[str, Any]:
        info = super().round_info(rounds, r, trained, added)
        layout = rounds.layout
        relabel_json = layout.path(*layout.round_dir(r, "relabel.json"))
        if r > 0 and storage.exists(layout.fs, relabel_json):
            info["relabel"] = storage.read_json(layout.fs, relabel_json)
            if trained and rounds.config.rounds.compare_without_relabelling:
                intended = rounds.report(student_uri(rounds.config, r, "intended"), "report.json")
                info["without_relabelling"] = {"train_rows": intended["rows"]["train"],
                                               "evaluation": intended["evaluation"]}
        return info
