"""Joining the Ray cluster, and how much of Ray's own output reaches the terminal.

Every job calls :func:`init_ray` before its first Ray call. Inside ``ray job
submit`` (``RAY_ADDRESS`` set) it joins that cluster; elsewhere it starts a
local one: the embedded default.

By default the terminal shows raydistill's own progress lines and reports
only. Ray Data's progress bars, execution plans and hints, the actors' own
logs (vLLM's engine start-up, Ray Train's workers) and the progress bars of
transformers go to Ray's log files under ``/tmp/ray/session_latest/logs`` or
nowhere. ``RAYDISTILL_VERBOSE=1`` (the commands' ``--verbose``) shows them all,
as the libraries print them.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "RAYDISTILL_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


def quiet_libraries() -> None:
    """Unless verbose: no progress bars from transformers (model saving and loading)."""
    if not verbose():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def init_ray() -> None:
    import ray
    from ray.data import DataContext

    loud = verbose()
    quiet_libraries()
    if not ray.is_initialized():
        # Workers log to files either way; log_to_driver only decides whether the driver echoes them.
        ray.init(log_to_driver=loud, logging_level=logging.INFO if loud else logging.WARNING)
    context = DataContext.get_current()
    context.enable_progress_bars = loud
    context.enable_operator_progress_bars = loud
    if not loud:
        # Ray Data's console handler; its file handlers (ray-data.log) keep every record.
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.ERROR)
