"""The shell command of a raydistill Ray job: ``sh ray_jobs/run.sh <script> ARGS``.

``ray_jobs/run.sh`` picks the job's interpreter (see :mod:`pipeline.jobs_api`).
"""

from __future__ import annotations

import shlex

LAUNCHER = "ray_jobs/run.sh"


def entrypoint(script: str, args: list[str]) -> str:
    """The shell command of a job running ``ray_jobs/<script>`` with ``args``."""
    return " ".join(["sh", LAUNCHER, script, *(shlex.quote(a) for a in args)])


def parse_entrypoint(command: str) -> tuple[str, list[str]]:
    """``(script, args)`` of an :func:`entrypoint` (or of ``python ray_jobs/<script> ARGS``)."""
    words = shlex.split(command)
    if words[:2] == ["sh", LAUNCHER] and len(words) > 2:
        return words[2], words[3:]
    if len(words) > 1 and words[0].startswith("python") and words[1].startswith("ray_jobs/"):
        return words[1].rsplit("/", 1)[-1], words[2:]
    raise ValueError(f"not a raydistill job entrypoint: {command!r}")
