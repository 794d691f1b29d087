"""Student-teacher strategies: each module says which steps a round has and what each reads and writes.

The orchestrator (:mod:`pipeline.rounds`) knows no strategy by name: it asks :func:`for_config` for
the strategy of ``rounds.strategy`` and runs it. A fourth strategy is a module here with a
:class:`~pipeline.strategies.base.Strategy` subclass, a line in ``STRATEGIES`` and its name among
the values ``config.py`` accepts for ``rounds.strategy``.
"""

from __future__ import annotations

from typing import Any, Callable

from pipeline.strategies.base import Strategy
from pipeline.strategies.extrapolation import Extrapolation
from pipeline.strategies.freeal import FreeAL
from pipeline.strategies.promptmix import PromptMix

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Extrapolation(), PromptMix(), FreeAL())}


def for_config(config: Any) -> Strategy:
    return STRATEGIES[config.rounds.strategy]


def step_function(strategy: str, step: str) -> Callable[..., dict[str, Any]]:
    """The function behind a ``round_step.py`` job of ``strategy``."""
    steps = STRATEGIES[strategy].steps()
    if step not in steps:
        raise ValueError(f"rounds.strategy {strategy}: no step {step!r} (its steps: {sorted(steps)})")
    return steps[step]


def all_steps() -> list[str]:
    return sorted({step for strategy in STRATEGIES.values() for step in strategy.steps()})
