"""How much of Ray's own output reaches the terminal: quiet by default, everything with --verbose."""

from __future__ import annotations

import logging

from pipeline.cluster import VERBOSE_ENV, init_ray, verbose


def _ray_data_console_levels() -> list[int]:
    return [h.level for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]


def test_quiet_by_default_and_verbose_on_request(ray_cluster, monkeypatch):
    from ray.data import DataContext

    context = DataContext.get_current()
    try:
        monkeypatch.delenv(VERBOSE_ENV, raising=False)
        assert not verbose()
        init_ray()  # joins the session's cluster
        assert not context.enable_progress_bars and not context.enable_operator_progress_bars
        assert _ray_data_console_levels() and all(level == logging.ERROR for level in _ray_data_console_levels())

        for value, expected in (("1", True), ("true", True), ("0", False), ("no", False)):
            monkeypatch.setenv(VERBOSE_ENV, value)
            assert verbose() is expected
        monkeypatch.setenv(VERBOSE_ENV, "1")
        init_ray()
        assert context.enable_progress_bars and context.enable_operator_progress_bars
    finally:
        monkeypatch.delenv(VERBOSE_ENV, raising=False)
        init_ray()
