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
from typing import Any, Callable

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
    if "RAY_DATA_USE_DATASOURCE_V2" not in os.environ:  # Ray's own switch, left to a user who sets it
        # Ray 2.60 reads Parquet through its new DataSourceV2 by default, which starts a pool of 32
        # footer-reading actors for every read_parquet. Measured on 2 cores (bench/parquet_read.py,
        # docs/benchmarks.md): 1 file in 4.9 s against 0.24 s with the V1 reader, 1,000 files in
        # 47 s against 4.3 s.
        context.use_datasource_v2 = False
    context.enable_progress_bars = loud
    context.enable_operator_progress_bars = loud
    if not loud:
        # Ray Data's console handler; its file handlers (ray-data.log) keep every record.
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.ERROR)


def map_files(fs: Any, files: list[str], fn: Callable[..., Any], *args: Any, tasks_per_cpu: int = 4) -> list[Any]:
    """Run ``fn(fs, group, *args)`` over groups of ``files`` in Ray tasks; the ``ObjectRef`` of each result.

    For passes that read one or a few columns of many parquet files (the
    committed ids, the report's counts): plain tasks reading with pyarrow read
    only those columns and measured 15x faster here than a Ray Data read of the
    same files (10M ids in 1,000 files: 3.8 s against 58 s on 2 cores). The
    driver holds file names and refs, never what the files contain.
    """
    import ray

    if not files:
        return []
    groups = min(len(files), max(1, int(ray.cluster_resources().get("CPU", 1)) * tasks_per_cpu))
    task = ray.remote(num_cpus=1)(fn)
    return [task.remote(fs, files[i::groups], *args) for i in range(groups)]
