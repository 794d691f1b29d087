"""``raydistill`` command line: one subcommand per job, all reading one config."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pipeline.config import Config, ConfigError, load_config
from pipeline.corpus import InputError
from pipeline.schemas import SchemaError

SMOKE_ROOT = Path("runs/smoke")


def smoke_config(config: Config, root: Path = SMOKE_ROOT) -> Config:
    """The same job with a tiny random teacher built on the spot, on CPU, writing under ``root``."""
    from pipeline.smoke import build_tiny_teacher

    teacher_path = build_tiny_teacher(root / "teacher", config.task.label_names)
    teacher = dataclasses.replace(
        config.teacher,
        model=str(teacher_path.resolve()),
        gpus_per_actor=0.0,
        tensor_parallel_size=1,
        gpu_memory_utilization=0.2,
        max_model_len=2048,
        max_tokens=32,
        temperature=1.0,
        dtype="float32",
    )
    data = dataclasses.replace(config.data, output=str((root / config.task.name / "labels").resolve()))
    return dataclasses.replace(config, teacher=teacher, data=data)


def label_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raydistill label", description="Label a corpus with the LLM teacher.")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--smoke", action="store_true", help="use a tiny random teacher built on the spot (labels are noise)"
    )
    args = parser.parse_args(argv)
    from pipeline.labeling import run_labeling
    from pipeline.reports import format_labeling_report
    from pipeline.smoke import SMOKE_WARNING

    config = load_config(args.config)
    if args.smoke:
        print(f"!! {SMOKE_WARNING}", flush=True)
        config = smoke_config(config)
    report = run_labeling(config, smoke=args.smoke)
    print(format_labeling_report(report))
    print(f"report: {config.data.output.rstrip('/')}/report.json")
    return 0


COMMANDS = {"label": label_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: raydistill {{{','.join(COMMANDS)}}} CONFIG [options]", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, InputError, SchemaError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1



if __name__ == "__main__":
    sys.exit(main())
