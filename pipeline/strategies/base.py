"""What a strategy is, and what the orchestrator offers it (:class:`Rounds`)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from pipeline.config import Config


class Rounds(Protocol):
    """The orchestrator, as a strategy sees it: it runs steps as jobs and keeps the manifest."""

    config: Config
    layout: Any  # pipeline.rounds_layout.RoundsLayout: where the run's files are
    log: Callable[[str], None]

    def step(self, r: int, name: str, entrypoint: str) -> None:
        """Run one step as a Ray job (or find it done, or wait for its running job)."""

    def job(self, script: str, overrides: list[str]) -> str:
        """The entrypoint of ``ray_jobs/<script>`` on the run's config with ``--set`` overrides."""

    def round_step(self, name: str, r: int) -> str:
        """The entrypoint of the strategy's step ``name`` of round ``r`` (``ray_jobs/round_step.py``)."""

    def report(self, uri: str, name: str) -> dict[str, Any]:
        """A step's JSON report under ``uri``."""

    def stop_reason(self, r: int) -> Optional[str]:
        """Why no round ``r`` should run (patience spent, no validation errors left), or None."""

    def record_round(self, r: int, added: int, trained: bool, data: Optional[list[str]] = None) -> None:
        """Put round ``r`` in the manifest (with the strategy's :meth:`Strategy.round_info`)."""


class Strategy:
    """One student-teacher strategy."""

    name = ""

    def steps(self) -> dict[str, Callable[..., dict[str, Any]]]:
        """The strategy's own steps run by ``ray_jobs/round_step.py``: name -> ``fn(config, r, log)``."""
        return {}

    def preflight(self, config: Config) -> None:
        """What the strategy can check before any job is submitted (its round-0 input)."""

    def run(self, rounds: Rounds) -> str:
        """Run (or continue) every round; the reason the rounds stopped."""
        raise NotImplementedError

    def round_info(self, rounds: Rounds, r: int, trained: bool, added: int) -> dict[str, Any]:
        """What the manifest records of round ``r`` beside the generic fields."""
        return {}


def override(key: str, value: Any) -> str:
    """One ``--set key=value``, the value written as JSON (which YAML reads as it is): a path holding
    ``:``, ``#``, quotes or brackets stays one string."""
    import json

    return f"{key}={json.dumps(value, ensure_ascii=False)}"


def relabel_overrides(input_uri: str, output_uri: str) -> list[str]:
    """``--set`` overrides that point the labelling job at a round's own parquet (``id``, ``text``)."""
    return [override("data.input", input_uri), override("data.format", "parquet"),
            override("data.id_column", "id"), override("data.text_column", "text"),
            override("data.output", output_uri)]
