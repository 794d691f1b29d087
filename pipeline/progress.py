"""Progress lines for long jobs: rows done, rate and ETA."""

from __future__ import annotations

import time
from typing import Callable, Optional


class Progress:
    """Prints rows done, rates and an ETA at most every ``every`` seconds.

    Rates and the ETA are measured from the first finished batch on: before it
    the workers (vLLM engines, student replicas) are still starting, and counting that time would make the
    first ETA absurd (hours for a job of minutes).
    """

    def __init__(self, total: int, log: Callable[[str], None], every: float = 5.0,
                 clock: Callable[[], float] = time.time, prefix: str = "[label]", workers: str = "engines",
                 verb: str = "labelled", tokens: bool = True):
        self.total, self.log, self.every, self.clock = total, log, every, clock
        self.prefix, self.workers, self.verb, self.show_tokens = prefix, workers, verb, tokens
        self.start = self.last = clock()
        self.rows = self.tokens = 0  # done by the workers
        self.committed = 0  # of which written to the output
        self.first: Optional[tuple[float, int, int]] = None  # (time, rows, tokens) at the first rows

    def elapsed(self) -> float:
        return self.clock() - self.start

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        now = self.clock()
        if self.first is None:
            self.first = (now, self.rows, self.tokens)
            self.log(f"{self.prefix} {self.workers} running after {now - self.start:.0f}s; first rows {self.verb}")
            self.last = now
        elif now - self.last >= self.every:
            self.last = now
            self.log(self.line())

    def line(self) -> str:
        shown = min(self.rows, self.total)  # a retried batch counts its rows twice
        done = (f"{self.prefix} {shown}/{self.total} rows ({100 * shown / max(self.total, 1):.0f}%, "
                f"{self.committed} committed)")
        if self.first is None:
            return f"{done} | {self.workers} starting ({self.elapsed():.0f}s)"
        since, rows0, tokens0 = self.first
        if self.rows == rows0:  # one update so far: no rate to measure yet
            return f"{done} | {self.elapsed():.0f}s"
        seconds = max(self.clock() - since, 1e-9)
        rate = (self.rows - rows0) / seconds
        eta = max(self.total - self.rows, 0) / rate
        tokens = f" | {(self.tokens - tokens0) / seconds:.0f} completion tokens/s" if self.show_tokens else ""
        return f"{done} | {rate:.1f} rows/s{tokens} | ETA {eta:.0f}s"

    def finish(self) -> None:
        self.log(self.line())
