"""``raydistill`` command line: one subcommand per job, all reading one config."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.cluster import VERBOSE_ENV, quiet_libraries
from pipeline.config import Config, ConfigError, load_config
from pipeline.corpus import InputError
from pipeline.distill import LabelDataError
from pipeline.evaluate import GoldSetError
from pipeline.review import ReviewError
from pipeline.rounds import StepFailed
from pipeline.schemas import SchemaError
from pipeline.storage import LeaseHeld
from pipeline.submit import in_uploaded_working_dir, refuse_relative_paths, smoke_root

def smoke_config(config: Config, root: Optional[Path] = None) -> Config:
    """The same job with a tiny random teacher built on the spot, on CPU, writing under ``root``
    (default ``runs/smoke``)."""
    root = root or smoke_root()
    from pipeline import storage
    from pipeline.smoke import build_tiny_teacher

    if not storage.is_s3(config.data.input) and not Path(config.data.input).exists():
        raise ConfigError(
            f"data.input: {config.data.input} does not exist (relative paths are read from the current "
            f"directory, {Path.cwd()}). Run from the project root, where the example data ships in "
            "examples/data/, or point the config at your data, e.g. --set data.input=/path/to/train.jsonl"
        )

    from pipeline import tasks

    teacher_path = build_tiny_teacher(root / "teacher", config.task.label_names,
                                      answer_tokens=tasks.for_config(config).smoke_answers())
    teacher = dataclasses.replace(
        config.teacher,
        model=str(teacher_path.resolve()),
        gpus_per_actor=0.0,
        tensor_parallel_size=1,
        gpu_memory_utilization=0.2,
        kv_cache_gib=0.5,  # plenty for the tiny teacher; the engine starts faster and takes 1.2 GB, not 4.8
        max_model_len=2048,
        max_tokens=32,
        temperature=1.0,
        dtype="float32",
        enforce_eager=True,
        engine_in_actor=True,
    )
    data = dataclasses.replace(config.data, output=str((root / config.task.name / "labels").resolve()))
    return dataclasses.replace(config, teacher=teacher, data=data)


def smoke_distill_config(config: Config, root: Optional[Path] = None) -> Config:
    """Distil the smoke labels into a tiny random BERT built on the spot, on CPU."""
    root = root or smoke_root()
    import pyarrow.fs as pafs

    from pipeline import storage
    from pipeline.config import DistillConfig, StudentConfig
    from pipeline.smoke import build_tiny_student

    labels = str((root / config.task.name / "labels").resolve())
    texts = storage.read_parquet(pafs.LocalFileSystem(), f"{labels}/data", columns=["text"]).column("text")
    student_path = build_tiny_student(root / "student-base", texts.to_pylist()[:2000])
    base = config.distill or DistillConfig(output="unused")
    distill = dataclasses.replace(
        base, labels=labels, output=str((root / config.task.name / "student").resolve()),
        epochs=2, use_gpu=False, batch_size=32, learning_rate=1e-3,
    )
    return dataclasses.replace(
        config, student=StudentConfig(model=str(student_path.resolve()), max_length=64), distill=distill
    )


def _config_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"raydistill {name}", description=description)
    parser.add_argument("config", help="YAML config file (local path or s3:// URI)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one config value (YAML), e.g. --set distill.epochs=1; repeatable")
    parser.add_argument("--verbose", action="store_true",
                        help=f"also show Ray's own progress bars and the actors' logs (or set {VERBOSE_ENV}=1)")
    return parser


def _load(args: argparse.Namespace) -> Config:
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read by pipeline.cluster, here and in jobs this process submits
    quiet_libraries()
    config = load_config(args.config, args.set)
    refuse_relative_paths(config)
    return config


def _config_job(argv, name: str, description: str, smoke_help: str, make_smoke, run, describe, output) -> int:
    """A job that takes one config file and an optional --smoke switch."""
    from pipeline.smoke import SMOKE_WARNING

    parser = _config_parser(name, description)
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    args = parser.parse_args(argv)
    config = _load(args)
    if args.smoke:
        print(f"!! {SMOKE_WARNING}", flush=True)
        config = make_smoke(config)
    report = run(config, smoke=args.smoke)
    print(describe(report))
    print(f"report: {output(config).rstrip('/')}/report.json")
    return 0


def label_main(argv: list[str] | None = None) -> int:
    from pipeline.labeling import run_labeling
    from pipeline.reports import format_labeling_report

    return _config_job(
        argv, "label", "Label a corpus with the LLM teacher.",
        "use a tiny random teacher built on the spot (labels are noise)",
        smoke_config, run_labeling, format_labeling_report, lambda c: c.data.output,
    )


def distill_main(argv: list[str] | None = None) -> int:
    from pipeline.distill import format_distill_report, run_distill

    return _config_job(
        argv, "distill", "Train the student on the teacher's labels (Ray Train DDP).",
        "distil the smoke labels into a tiny random student built on the spot",
        smoke_distill_config, run_distill, format_distill_report, lambda c: c.distill.output,
    )


def predict_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydistill predict", description="Label a corpus with an exported student (Ray Data)."
    )
    parser.add_argument("model_dir", help="exported model folder (local or s3://); with --registry, a version "
                                          "(v0003) or production")
    parser.add_argument("input", help="corpus: local path or s3:// URI, parquet/jsonl/csv, file or prefix")
    parser.add_argument("output", help="output folder: local path or s3:// URI")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    parser.add_argument("--commit-rows", type=int, default=8192, help="rows per committed output file")
    parser.add_argument("--actors", type=int, default=1, help="student replicas")
    parser.add_argument("--gpu", action="store_true", help="one GPU per replica")
    parser.add_argument("--engine", choices=["auto", "torch", "onnx"], default="auto",
                        help="auto: ONNX Runtime when the model has an ONNX export (raydistill export-onnx) and no "
                             "GPU is asked for, else torch")
    parser.add_argument("--registry", default=None, metavar="ROOT",
                        help="a retraining root (retrain.root) whose model registry names the model")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (credentials from the environment)")
    args = parser.parse_args(argv)
    from pipeline.config import StorageConfig
    from pipeline.predict import run_predict
    from pipeline.registry import resolve_model

    for name in ("model_dir", "input", "output", "registry"):
        value = getattr(args, name)
        if name == "model_dir" and args.registry or value is None:
            continue
        if in_uploaded_working_dir() and not value.startswith("s3://") and not os.path.isabs(value):
            raise ConfigError(f"{name}: the relative path {value!r} would resolve inside this job's temporary "
                              "working directory; use an absolute path or s3://")

    storage_config = StorageConfig(endpoint_url=args.s3_endpoint)
    model_dir, version = resolve_model(args.model_dir, args.registry, storage_config)
    if version:
        print(f"[predict] {args.model_dir} is {version}: {model_dir}", flush=True)
    report = run_predict(
        model_dir, args.input, args.output, storage_config,
        id_column=args.id_column, text_column=args.text_column, batch_size=args.batch_size,
        commit_rows=args.commit_rows, concurrency=args.actors, use_gpu=args.gpu, engine=args.engine,
    )
    rows = report["rows"]
    print(f"predicted {rows['predicted']} of {rows['input']} rows ({rows['predicted_this_run']} this run, "
          f"{rows['quarantined']} quarantined) in {report['wall_seconds']}s "
          f"({report['rows_per_second']} rows/s): {report['label_distribution']}")
    return 0


def smoke_main(argv: list[str] | None = None) -> int:
    """Label, then distil, on tiny random models in one Ray session; say how long each part took."""
    from pipeline.cluster import init_ray
    from pipeline.distill import format_distill_report, run_distill
    from pipeline.labeling import run_labeling
    from pipeline.reports import format_labeling_report
    from pipeline.smoke import SMOKE_WARNING

    parser = _config_parser("smoke", "The whole pipeline (label, then distil) on tiny random models built on "
                                     "the spot: offline, on CPU, in minutes. The labels are noise.")
    args = parser.parse_args(argv)
    started = time.time()
    config = _load(args)
    print(f"!! {SMOKE_WARNING}", flush=True)
    times: dict[str, float] = {}

    def timed(part: str, step):
        begin = time.time()
        result = step()
        times[part] = time.time() - begin
        return result

    label_config = timed("build tiny teacher", lambda: smoke_config(config))
    timed("start Ray", init_ray)
    label_report = timed("label", lambda: run_labeling(label_config, smoke=True))
    print(format_labeling_report(label_report), flush=True)
    distill_config = timed("build tiny student", lambda: smoke_distill_config(config))
    distill_report = timed("distill", lambda: run_distill(distill_config, smoke=True))
    print(format_distill_report(distill_report))
    details = {
        "label": f" ({label_report['time']['labelling_seconds']}s streaming "
                 f"{label_report['rows']['labelled_this_run']} rows through the engine, its start-up included)",
        "distill": f" ({distill_report['time']['train_seconds']}s in Ray Train, {distill_report['epochs']} epochs)",
    }
    print(f"smoke run: {time.time() - started:.0f}s in all (outputs under {smoke_root() / config.task.name}/)")
    for part, seconds in times.items():
        print(f"  {part:<20}{seconds:6.1f}s{details.get(part, '')}")
    print(f"!! {SMOKE_WARNING}")
    return 0


def smoke_rounds_config(config: Config, root: Optional[Path] = None) -> Config:
    """Rounds over the smoke labels with the tiny teacher and student (run `make smoke` first)."""
    root = root or smoke_root()
    from pipeline.config import RoundsConfig

    labels = (root / config.task.name / "labels").resolve()
    if not (labels / "data").is_dir():
        raise ConfigError(f"rounds --smoke: no smoke labels at {labels}; run `make smoke` first")
    smoke = smoke_distill_config(smoke_config(config, root), root)
    distill = dataclasses.replace(smoke.distill, epochs=1)
    base = config.rounds or RoundsConfig(output="unused")
    output = root / config.task.name / f"rounds-{base.strategy}"
    rounds = dataclasses.replace(base, output=str(output.resolve()), rounds=2, max_errors=64, examples_per_error=2,
                                 mix_per_class=8, seed_synthesis=False)
    return dataclasses.replace(smoke, distill=distill, rounds=rounds)


def rounds_main(argv: list[str] | None = None) -> int:
    from pipeline.rounds import run_rounds

    return _config_job(
        argv, "rounds", "Student-teacher rounds (rounds.strategy: extrapolation, promptmix or freeal): each step a Ray job "
        "via the Jobs API (rounds.address).",
        "two rounds over the smoke labels with the tiny random teacher and student (noise)",
        smoke_rounds_config, lambda config, smoke: run_rounds(config, client=_local_jobs(config)),
        lambda state: f"rounds: {state['status']}",
        lambda c: c.rounds.output,
    )


def _local_jobs(config: Config) -> Any:
    """For ``rounds.address: local``: a Jobs API stand-in that runs each step's command in this process."""
    if config.rounds is None or config.rounds.address != "local":
        return None
    from pipeline.local_jobs import LocalJobs

    return LocalJobs(main)


def round_step_main(argv: list[str] | None = None) -> int:
    from pipeline import strategies

    parser = argparse.ArgumentParser(prog="raydistill round-step",
                                     description="One synthesis step of a round (run as a Ray job by `rounds`).")
    parser.add_argument("config", help="YAML config file (local path or s3:// URI)")
    parser.add_argument("step", choices=strategies.all_steps())
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    refuse_relative_paths(config)
    if config.rounds is None:
        raise ConfigError("rounds: this step needs the rounds section of the config")
    report = strategies.step_function(config.rounds.strategy, args.step)(config, args.round, print)
    print({key: value for key, value in report.items() if key != "reasons"})
    return 0


TEMPLATES = Path(__file__).parent / "templates"


def init_main(argv: list[str] | None = None) -> int:
    types = sorted(path.stem for path in TEMPLATES.glob("*.yaml"))
    parser = argparse.ArgumentParser(prog="raydistill init",
                                     description="Write a commented starter config for a new task.")
    parser.add_argument("type", nargs="?", default="classification", choices=types, help="task type")
    parser.add_argument("-o", "--output", default="raydistill.yaml", help="file to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    target = Path(args.output)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists; pass --force to overwrite it or -o to write elsewhere")
    target.write_text((TEMPLATES / f"{args.type}.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    print(f"wrote {target} ({args.type}). Edit task and data.input, then: raydistill label {target} --smoke")
    return 0


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("raydistill")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def submit_main(argv: list[str] | None = None) -> int:
    from pipeline.submit import submit_main as submit

    return submit(argv)


def export_review_main(argv: list[str] | None = None) -> int:
    from pipeline.review import MAX_TASKS, export_review, format_export_report

    parser = _config_parser("export-review", "Write the rows the teacher is least sure of as Label Studio tasks "
                                             "with its labels as pre-annotations, and the labelling config.")
    parser.add_argument("output", help="folder for tasks.json, label_config.xml, manifest.json (local or s3://)")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"export the N most uncertain rows (required above {MAX_TASKS:,} labelled rows)")
    parser.add_argument("--labels", default=None, help="the labelling job's output; default data.output")
    args = parser.parse_args(argv)
    manifest = export_review(_load(args), args.output, limit=args.limit, labels_uri=args.labels)
    print(format_export_report(manifest, args.output))
    return 0


def import_review_main(argv: list[str] | None = None) -> int:
    from pipeline.review import format_import_report, import_review

    parser = _config_parser("import-review", "Turn Label Studio's JSON export of reviewed tasks into a gold set "
                                             "(jsonl): the reviewer's labels where reviewed, else the teacher's.")
    parser.add_argument("export_json", help="Label Studio's JSON export of the project (all tasks)")
    parser.add_argument("output", help="gold jsonl file to write (local or s3://)")
    parser.add_argument("--labels", default=None, help="the labelling job's output; default data.output")
    args = parser.parse_args(argv)
    report = import_review(_load(args), args.export_json, args.output, labels_uri=args.labels)
    print(format_import_report(report))
    return 0


def export_onnx_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydistill export-onnx",
        description="Add an ONNX export (model.onnx) to an exported student; predict then runs it with ONNX Runtime.")
    parser.add_argument("model_dir", help="exported model folder (local or s3://)")
    parser.add_argument("--int8", action="store_true", help="quantise the weights to int8 (dynamic quantisation)")
    parser.add_argument("--output", default=None, help="publish the model with its export here instead (a copy)")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (credentials from the environment)")
    args = parser.parse_args(argv)
    from pipeline.config import StorageConfig
    from pipeline.onnx_student import export_onnx

    export_onnx(args.model_dir, StorageConfig(endpoint_url=args.s3_endpoint), output=args.output, int8=args.int8)
    return 0


def retrain_main(argv: list[str] | None = None) -> int:
    from pipeline.retrain import format_retrain_report, run_retrain

    parser = _config_parser("retrain", "One periodic retraining run: label the new partitions of retrain.input, "
                                       "train a candidate student, promote it if it beats production.")
    parser.add_argument("--period", default=None, help="only this partition (a sub-folder name of retrain.input); "
                                                       "default: every partition not done yet")
    args = parser.parse_args(argv)
    config = _load(args)
    record = run_retrain(config, period=args.period)
    print(format_retrain_report(record))
    if record["status"] != "nothing to do":
        print(f"record: {config.retrain.root.rstrip('/')}/runs/{record['run']}/run.json")
    return 0


def models_main(argv: list[str] | None = None) -> int:
    from pipeline.registry import Registry, format_versions

    parser = argparse.ArgumentParser(prog="raydistill models",
                                     description="The model registry of a retraining root: list, show, promote, "
                                                 "roll back.")
    parser.add_argument("action", choices=["list", "show", "promote", "rollback"])
    parser.add_argument("registry", help="the retraining root (retrain.root, local or s3://), or a config naming it")
    parser.add_argument("version", nargs="?", default=None,
                        help="show: a version or production (default); promote: the version; rollback: the "
                             "version to go back to (default: the one production replaced)")
    parser.add_argument("--reason", default=None, help="recorded with a promote or rollback")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (credentials from the environment)")
    args = parser.parse_args(argv)
    from pipeline.config import StorageConfig

    root, storage_config = args.registry, StorageConfig(endpoint_url=args.s3_endpoint)
    if root.endswith((".yaml", ".yml")):
        config = load_config(root)
        if config.retrain is None:
            raise ConfigError(f"{root}: has no retrain section naming the registry's root")
        root, storage_config = config.retrain.root, config.storage
    registry = Registry.open(root, storage_config)
    if args.action == "list":
        print(format_versions(registry))
    elif args.action == "show":
        import json

        version, _ = registry.resolve(args.version or "production")
        info = registry.info(version)
        info.pop("config", None)
        print(json.dumps({**info, "production": registry.production() == version}, indent=2))
    elif args.action == "promote":
        if not args.version:
            raise ConfigError("models promote: name the version to promote")
        pointer = registry.promote(args.version, reason=args.reason or "promoted by hand")
        print(f"production is now {pointer['version']} (it replaced {(pointer['previous'] or ['nothing'])[-1]})")
    else:
        pointer = registry.rollback(args.version, reason=args.reason or "rolled back by hand")
        print(f"production rolled back to {pointer['version']}")
    return 0


COMMANDS = {"init": init_main, "smoke": smoke_main, "label": label_main, "distill": distill_main,
            "predict": predict_main, "rounds": rounds_main, "submit": submit_main, "round-step": round_step_main,
            "export-review": export_review_main, "import-review": import_review_main,
            "export-onnx": export_onnx_main, "retrain": retrain_main, "models": models_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"raydistill {version()}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: raydistill {{{','.join(COMMANDS)}}} ... (see raydistill COMMAND --help) | raydistill --version",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, InputError, SchemaError, LabelDataError, GoldSetError, ReviewError, StepFailed,
            LeaseHeld) as err:  # LeaseHeld: a scheduled tick that finds the last one still running says so
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
