"""Student-teacher rounds, each step a Ray job.

What a round is depends on ``rounds.strategy``: each strategy is a module of
:mod:`pipeline.strategies` (error extrapolation, PromptMix, FreeAL) that says
which steps its rounds have and what each step reads and writes. This module
is the orchestrator and knows no strategy by name.

The rounds stop after ``rounds.rounds`` or once the validation metric has not
improved for ``rounds.patience`` rounds; the best round's student is copied
to ``<rounds.output>/model``.

Every step is submitted through Ray's Jobs API (``JobSubmissionClient``) to
``rounds.address``. The orchestrator itself only submits, waits and records:
``manifest.json`` (written atomically) holds each step's status, job id,
outputs and metrics. A step is recorded as submitted *before* it is
submitted, under a submission id fixed by the run, round, step and attempt,
so an orchestrator killed at any point and started again finds the step's
job (still running: it waits; succeeded: it records it; failed or lost: it
submits the next attempt) and never runs a finished step twice. A job that
fails is submitted again up to ``rounds.step_retries`` times. Errors of the
Jobs API itself (5xx answers, a dashboard restarting) are retried for
``rounds.api_timeout_s``: only an answer that the job does not exist counts as
a lost job, and a job is submitted again only once its earlier attempt is seen
ended. Job logs are followed as they grow, not downloaded again at each poll.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional


from pipeline import model_store, storage, strategies
from pipeline.entrypoints import entrypoint
from pipeline.jobs_api import PROJECT_ROOT, JobsApiError, address_of, job_client, job_env
from pipeline.config import Config, ConfigError, dump_config, with_absolute_paths
from pipeline.evaluate import load_gold
from pipeline.round_steps import validation_errors
from pipeline.rounds_layout import RoundsLayout, student_uri

LOG_TAIL_LINES = 40
_PROGRESS = re.compile(r"^\[(label|distill|round \d+|seed|rounds|freeal)[\]:]|^(distillation report|  (rows|epochs|time|validation|test) )")
EXIT_AFTER_ENV = "RAYDISTILL_ROUNDS_EXIT_AFTER"  # test hook, see _exit_if_asked


class StepFailed(RuntimeError):
    """A round's step ran as a Ray job and failed; the message names it and holds its log tail."""


_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _refused(err: BaseException) -> bool:
    """Whether a Jobs API error is a client error (4xx other than 404, 408 and 429), not a failing API."""
    found = re.search(r"status code (4\d\d)", str(err))
    return bool(found) and found.group(1) not in ("404", "408", "429")


def _job_missing(err: BaseException) -> bool:
    """Whether a Jobs API error says the job does not exist (rather than that the API failed)."""
    text = str(err)
    return "status code 404" in text or "does not exist" in text


class LogFollower:
    """Follows one job's log through the Jobs API's log stream, in a thread of its own.

    Keeps the last ``keep`` lines (a failed step's report) and hands every new
    line to ``on_line``. A stream cut short (the dashboard restarting) is opened
    again and replays the log from its start; lines already seen are skipped.
    """

    def __init__(self, client: Any, submission_id: str, on_line: Callable[[str], None], keep: int = LOG_TAIL_LINES):
        self.client, self.submission_id, self.on_line = client, submission_id, on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.seen = 0
        self.ended = threading.Event()  # the stream ended with the job
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"logs-{submission_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                asyncio.run(self._follow())
                self.ended.set()
                return
            except Exception:  # noqa: BLE001 - a cut stream is opened again
                self._stop.wait(2.0)

    async def _follow(self) -> None:
        line_no, partial = 0, ""
        async for chunk in self.client.tail_job_logs(self.submission_id):
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                line_no += 1
                if line_no > self.seen:
                    self.seen = line_no
                    self.tail.append(line)
                    self.on_line(line)
            if self._stop.is_set():
                return
        if partial and line_no + 1 > self.seen:
            self.seen = line_no + 1
            self.tail.append(partial)
            self.on_line(partial)

    def finish(self, timeout: float = 10.0) -> list[str]:
        """Wait (briefly) for the stream to end with the job, stop following; the last lines seen."""
        self.ended.wait(timeout)
        self._stop.set()
        return list(self.tail)


def run_rounds(config: Config, *, log: Callable[[str], None] = print, client: Any = None) -> dict[str, Any]:
    """Run (or continue) the rounds of ``config.rounds``; returns the summary."""
    if config.rounds is None:
        raise ConfigError("rounds: this job needs the rounds section of the config")
    # Each step's job reads the run's config.yaml: relative paths there would resolve in the job's own
    # temporary working directory, so they are made absolute here, against this directory.
    config = with_absolute_paths(config, Path.cwd())
    preflight(config)
    layout = RoundsLayout.of(config)
    with storage.OutputLease(layout.fs, layout.root, config.rounds.output, "rounds.output", "rounds orchestrator"):
        manifest = Manifest.open(layout, config)
        client = client or job_client(config.rounds.address, config.rounds.api_timeout_s)
        runner = _Runner(config, layout, manifest, client, log)
        return runner.run()


def preflight(config: Config) -> None:
    """Everything checkable before any job is submitted: gold sets, round-0 data, the job files."""
    if config.task.type != "classification":
        # The strategies ask the teacher for new examples of one class each (errors, class mixes, demos).
        raise ConfigError(f"task.type: rounds work on classification tasks; this task is {config.task.type} "
                          "(label and distil it with `raydistill label` and `raydistill distill`)")
    label_names = config.task.label_names
    load_gold(config.distill.validation, label_names, "distill.validation", config.storage)
    if config.distill.test:
        load_gold(config.distill.test, label_names, "distill.test", config.storage)
    strategies.for_config(config).preflight(config)
    working_dir = Path(config.rounds.working_dir or PROJECT_ROOT)
    if not (working_dir / "ray_jobs" / "round_step.py").is_file():
        raise ConfigError(f"rounds.working_dir: {working_dir} does not hold ray_jobs/round_step.py")


class Manifest:
    """The run's state in ``<rounds.output>/manifest.json``; every change is written at once, atomically."""

    def __init__(self, layout: RoundsLayout, state: dict[str, Any]):
        self.layout, self.state = layout, state

    @classmethod
    def open(cls, layout: RoundsLayout, config: Config) -> "Manifest":
        path = layout.path("manifest.json")
        fingerprint = config_fingerprint(config)
        if storage.exists(layout.fs, path):
            state = storage.read_json(layout.fs, path)
            if state.get("config_fingerprint") != fingerprint:
                raise ConfigError(
                    f"rounds.output: {layout.uri} holds rounds run with another config "
                    f"(see {layout.uri}/config.yaml); use a new rounds.output or the same config"
                )
            return cls(layout, state)
        state = {
            "run_id": uuid.uuid4().hex[:10],
            "config_fingerprint": fingerprint,
            "config": layout.uri_of("config.yaml"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "status": "running",
            "steps": {},
            "rounds": {},
        }
        storage.write_bytes_atomic(layout.fs, layout.path("config.yaml"), dump_config(config).encode("utf-8"))
        manifest = cls(layout, state)
        manifest.save()
        return manifest

    def save(self) -> None:
        storage.write_json(self.layout.fs, self.layout.path("manifest.json"), self.state)

    def step(self, r: int, name: str) -> Optional[dict[str, Any]]:
        return self.state["steps"].get(f"{r}/{name}")

    def set_step(self, r: int, name: str, record: dict[str, Any]) -> None:
        self.state["steps"][f"{r}/{name}"] = record
        self.save()


def config_fingerprint(config: Config) -> str:
    """What must not change between a run and its restart: everything but where and how often we ask."""
    import dataclasses

    import yaml

    rounds = dataclasses.replace(config.rounds, address=None, working_dir=None, poll_seconds=1.0, step_retries=0,
                                 api_timeout_s=1.0)
    # How failures are retried is not what the run computes either.
    teacher = dataclasses.replace(config.teacher, request_retries=0, stall_timeout_s=1.0, batch_attempts=1)
    storage_config = dataclasses.replace(config.storage, max_attempts=1)
    text = dump_config(dataclasses.replace(config, rounds=rounds, teacher=teacher, storage=storage_config))
    return hashlib.sha256(yaml.safe_dump(yaml.safe_load(text), sort_keys=True).encode()).hexdigest()[:16]


class _Runner:
    def __init__(self, config: Config, layout: RoundsLayout, manifest: Manifest, client: Any,
                 log: Callable[[str], None]):
        self.config, self.layout, self.manifest, self.client, self.log = config, layout, manifest, client, log
        self.rounds = config.rounds
        self.strategy = strategies.for_config(config)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        state = self.manifest.state
        state["status"] = "running"
        self.manifest.save()
        self.log(f"[rounds] run {state['run_id']} in {self.layout.uri}, Jobs API at {address_of(self.client)}")
        try:
            stop = self.strategy.run(self)
        except StepFailed:
            state["status"] = "failed"
            self.manifest.save()
            raise
        state["stop_reason"] = stop
        self._finish(time.time() - started)
        return state

    def stop_reason(self, r: int) -> Optional[str]:
        trained = [int(q) for q, info in self.manifest.state["rounds"].items() if info.get("trained")]
        best = self.manifest.state.get("best")
        last = max(trained)
        if best and last - best["round"] >= self.rounds.patience:
            return (f"validation {self.rounds.metric} has not improved for {last - best['round']} round(s) "
                    f"(rounds.patience={self.rounds.patience})")
        if validation_errors(self.config, last).num_rows == 0:
            return f"round {last}'s student makes no validation errors"
        return None

    def record_round(self, r: int, added: int, trained: bool, data: Optional[list[str]] = None) -> None:
        info: dict[str, Any] = {"added": added, "trained": trained}
        info.update(self.strategy.round_info(self, r, trained, added))
        if trained:
            report = self.report(student_uri(self.config, r), "report.json")
            info.update({
                "train_data": data,
                "train_rows": report["rows"]["train"],
                "model": report["model"],
                "evaluation": report["evaluation"],
                "best_epoch": report["best_epoch"],
            })
            score = report["evaluation"]["validation"][self.rounds.metric]
            best = self.manifest.state.get("best")
            if best is None or score > best["score"]:
                self.manifest.state["best"] = {"round": r, "score": score, "model": report["model"]}
            self.log(f"[rounds] round {r}: {info['train_rows']} train rows (+{info['added']}), validation "
                     f"{self.rounds.metric} {score:.4f}; best so far round {self.manifest.state['best']['round']}")
        self.manifest.state["rounds"][str(r)] = info
        self.manifest.save()

    # -- one step = one Ray job -----------------------------------------------------------------------

    def job(self, script: str, overrides: list[str]) -> str:
        sets = [word for arg in overrides for word in ("--set", arg)]
        return entrypoint(script, [self.layout.uri_of("config.yaml"), *sets])

    def round_step(self, name: str, r: int) -> str:
        return entrypoint("round_step.py", [self.layout.uri_of("config.yaml"), name, "--round", str(r)])

    def step(self, r: int, name: str, entrypoint: str) -> None:
        record = self.manifest.step(r, name)
        if record and record["status"] == "succeeded":
            self.log(f"[rounds] round {r} {name}: done earlier (job {record['submission_id']})")
            return
        if record and record["status"] == "submitted":
            status = self._job_status(record["submission_id"])
            if status in ("PENDING", "RUNNING", "SUCCEEDED"):
                self.log(f"[rounds] round {r} {name}: found its job {record['submission_id']} ({status})")
                return self._wait(r, name, record)
            self.log(f"[rounds] round {r} {name}: its job {record['submission_id']} is {status or 'lost'}; "
                     "submitting it again")
        if record:
            self._stop_job(record["submission_id"])
        attempt = record["attempt"] + 1 if record else 0
        submission_id = f"raydistill-{self.manifest.state['run_id']}-r{r}-{name}-a{attempt}"
        record = {"status": "submitted", "submission_id": submission_id, "attempt": attempt,
                  "entrypoint": entrypoint, "submitted_at": time.time()}
        self.manifest.set_step(r, name, record)  # recorded before it exists: a restart looks for it
        self._submit(entrypoint, submission_id, {"raydistill_run": self.manifest.state["run_id"],
                                                 "round": str(r), "step": name})
        self.log(f"[rounds] round {r} {name}: submitted job {submission_id}")
        _exit_if_asked(f"{r}/{name}:submitted")
        self._wait(r, name, record)

    def _submit(self, entrypoint: str, submission_id: str, metadata: dict[str, str]) -> None:
        """Submit, retrying while the Jobs API fails or the head's job agent is not up yet (just after
        `ray start`). The submission id makes a retry safe: a try whose answer was lost but that went
        through is found as "already exists", never run twice."""

        def submit() -> None:
            try:
                self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                       runtime_env=self._runtime_env(), metadata=metadata)
            except RuntimeError as err:
                if "already exists" not in str(err):  # else an earlier try went through after all
                    raise

        self._api(submit, f"to submit job {submission_id}", missing=None)

    def _wait(self, r: int, name: str, record: dict[str, Any]) -> None:
        submission_id = record["submission_id"]

        def show(line: str) -> None:
            if _PROGRESS.match(line):  # the jobs' own progress lines; the full log stays with Ray
                self.log(f"  | {line}")

        follower = LogFollower(self.client, submission_id, show)
        status: Optional[str] = None
        try:
            while True:
                status = self._job_status(submission_id)
                if status in (*_TERMINAL, None):
                    break
                time.sleep(self.rounds.poll_seconds)
        finally:
            lines = follower.finish(timeout=10.0 if status in _TERMINAL else 0.0)
        record = {**record, "finished_at": time.time(), "job_status": status}
        record["seconds"] = round(record["finished_at"] - record["submitted_at"], 1)
        if status != "SUCCEEDED":
            if not lines:  # the log stream never opened: fetch the log once
                lines = self._logs(submission_id).splitlines()[-LOG_TAIL_LINES:]
            tail = "\n".join(lines)
            record.update(status="failed", log_tail=tail)
            self.manifest.set_step(r, name, record)
            if record["attempt"] < self.rounds.step_retries:
                self.log(f"[rounds] round {r} {name}: job {submission_id} ended {status or 'unknown to the cluster'}; "
                         f"submitting it again (attempt {record['attempt'] + 2} of {self.rounds.step_retries + 1})")
                return self.step(r, name, record["entrypoint"])
            raise StepFailed(
                f"round {r} step {name!r} failed: Ray job {submission_id} ended {status or 'unknown to the cluster'}"
                f" (attempt {record['attempt'] + 1} of {self.rounds.step_retries + 1})"
                f"\n--- last {LOG_TAIL_LINES} log lines ---\n{tail}"
            )
        record["status"] = "succeeded"
        self.manifest.set_step(r, name, record)
        self.log(f"[rounds] round {r} {name}: succeeded in {record['seconds']}s")
        _exit_if_asked(f"{r}/{name}")

    def _job_status(self, submission_id: str) -> Optional[str]:
        """The job's status; None when the cluster says it has no such job (e.g. it was restarted)."""
        return self._api(lambda: str(self.client.get_job_status(submission_id).value),
                         f"the status of job {submission_id}", missing=None)

    def _logs(self, submission_id: str) -> str:
        return self._api(lambda: self.client.get_job_logs(submission_id), f"the log of job {submission_id}",
                         missing="")

    def _stop_job(self, submission_id: str) -> None:
        """Before another attempt: the earlier one must be seen ended, never two jobs on one output."""
        status = self._job_status(submission_id)
        if status is None or status in _TERMINAL:
            return
        self.log(f"[rounds] stopping job {submission_id} ({status}) before its next attempt")
        self._api(lambda: self.client.stop_job(submission_id), f"stopping job {submission_id}", missing=None)
        deadline = time.time() + self.rounds.api_timeout_s
        while (status := self._job_status(submission_id)) not in (*_TERMINAL, None):
            if time.time() > deadline:
                raise JobsApiError(f"job {submission_id} is still {status} {self.rounds.api_timeout_s:.0f}s after "
                                   "it was asked to stop; stop it (ray job stop) and start the rounds again")
            time.sleep(self.rounds.poll_seconds)

    def _api(self, call: Callable[[], Any], what: str, missing: Any) -> Any:
        """``call()`` through the Jobs API, retried with backoff while the API fails; ``missing`` if no such job."""
        deadline, wait = time.time() + self.rounds.api_timeout_s, 1.0
        while True:
            try:
                return call()
            except (RuntimeError, OSError) as err:  # HTTP errors; requests' connection errors are OSErrors
                if _job_missing(err):
                    return missing
                if _refused(err):  # the request itself is wrong: asking again gets the same answer
                    raise
                if time.time() > deadline:
                    raise JobsApiError(f"the Jobs API at {address_of(self.client)} failed for "
                                       f"{self.rounds.api_timeout_s:.0f}s while asking {what}: {err}") from err
                self.log(f"[rounds] the Jobs API failed asking {what} ({str(err)[:200]}); retrying in {wait:.0f}s")
                time.sleep(wait)
                wait = min(wait * 2, 30.0)

    def _runtime_env(self) -> dict[str, Any]:
        # The job reads config.yaml at the S3 endpoint the config names.
        return {"working_dir": str(self.rounds.working_dir or PROJECT_ROOT),
                "env_vars": job_env(self.config.storage.endpoint_url)}

    def report(self, uri: str, name: str) -> dict[str, Any]:
        fs, root = storage.resolve(uri, self.config.storage)
        return storage.read_json(fs, storage.join(root, name))

    # -- the end ------------------------------------------------------------------------------------

    def _finish(self, seconds: float) -> None:
        state = self.manifest.state
        best = state["best"]
        model_uri = self.layout.uri_of("model")
        src_fs, src = storage.resolve(best["model"], self.config.storage)
        model_store.publish(src_fs, src, self.layout.fs, self.layout.path("model"))
        state["model"] = model_uri
        table = summary_table(state, self.rounds.metric)
        storage.write_bytes_atomic(self.layout.fs, self.layout.path("summary.md"), table.encode("utf-8"))
        storage.write_bytes_atomic(self.layout.fs, self.layout.path("metrics.png"), metrics_png(state, self.rounds.metric))
        state["status"] = "finished"
        state["orchestrator_seconds_last_run"] = round(seconds, 1)
        self.manifest.save()
        self.log(table)
        self.log(f"[rounds] stopped: {state['stop_reason']}; best round {best['round']} "
                 f"(validation {self.rounds.metric} {best['score']:.4f}) -> {model_uri}")
        self.log(f"[rounds] summary: {self.layout.uri_of('summary.md')}, plot: {self.layout.uri_of('metrics.png')}")


def _exit_if_asked(point: str) -> None:
    """Test hook: $RAYDISTILL_ROUNDS_EXIT_AFTER=<round>/<step>[:submitted] dies like a killed process there."""
    if os.environ.get(EXIT_AFTER_ENV) == point:
        os._exit(75)


def summary_table(state: dict[str, Any], metric: str) -> str:
    """Markdown: per round, rows added and trained on, validation and test metrics, job time."""
    lines = [
        "| round | added | train rows | val accuracy | val macro-F1 | test accuracy | test macro-F1 | job seconds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    best = state.get("best", {}).get("round")
    for r in sorted(state["rounds"], key=int):
        info = state["rounds"][r]
        seconds = sum(s.get("seconds", 0) for key, s in state["steps"].items() if key.split("/")[0] == r)
        evaluation = info.get("evaluation", {})
        cells = [f"{r}{' (best)' if int(r) == best else ''}", str(info["added"]), str(info.get("train_rows", "-"))]
        for name in ("validation", "test"):
            scores = evaluation.get(name)
            cells += [f"{scores['accuracy']:.4f}", f"{scores['macro_f1']:.4f}"] if scores else ["-", "-"]
        cells.append(f"{seconds:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    mixed = [(r, state["rounds"][r]) for r in sorted(state["rounds"], key=int) if "relabel" in state["rounds"][r]]
    if mixed:
        lines += ["", "PromptMix relabelling: the labelling job's labels against the intended ones, and the student "
                  "trained on each.", "",
                  "| round | examples | relabelled | unchanged | abstained | quarantined | test accuracy, relabelled "
                  "| test accuracy, intended labels |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r, info in mixed:
            stats = info["relabel"]
            with_relabel = info.get("evaluation", {}).get("test")
            without = info.get("without_relabelling", {}).get("evaluation", {}).get("test")
            lines.append(f"| {r} | {stats['examples']} | {stats['relabelled']} | {stats['unchanged']} | "
                         f"{stats['abstained']} | {stats['quarantined']} | "
                         f"{_score(with_relabel)} | {_score(without)} |")
    freeal = [(r, state["rounds"][r]["freeal"], state["rounds"][r]) for r in sorted(state["rounds"], key=int)
              if "freeal" in state["rounds"][r]]
    if freeal:
        lines += ["", "FreeAL: the teacher's labels per round, the student's small-loss split of them, and the "
                  "student trained on them as they are (warm-up) against on the selection.", "",
                  "| round | labels changed | clean | noisy | pseudo-labelled | to relabel | teacher accuracy | "
                  "on clean rows | test accuracy, warm-up | test accuracy, selection |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r, info, record in freeal:
            gold = info.get("teacher_accuracy") or {}
            lines.append(
                f"| {r} | {info['labels_changed']} | {info['clean']} | {info['noisy']} | {info['pseudo_labelled']} | "
                f"{info['to_relabel']} | {_fraction(gold.get('accuracy'))} | {_fraction(gold.get('clean_accuracy'))} | "
                f"{_score(info['warmup_evaluation'].get('test'))} | {_score(record.get('evaluation', {}).get('test'))} |")
    return "\n".join(lines)


def _fraction(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _score(scores: Optional[dict[str, float]]) -> str:
    return f"{scores['accuracy']:.4f}" if scores else "-"


def metrics_png(state: dict[str, Any], metric: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = sorted((int(r), info) for r, info in state["rounds"].items() if info.get("trained"))
    xs = [r for r, _ in rounds]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("validation", "test"):
        ys = [info["evaluation"][name][metric] for _, info in rounds if name in info["evaluation"]]
        if len(ys) == len(xs):
            ax.plot(xs, ys, marker="o", label=f"{name} {metric}")
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_xticks(xs)
    ax.legend(loc="lower left")
    added = ax.twinx()
    added.bar(xs, [info["added"] for _, info in rounds], alpha=0.2, color="grey")
    added.set_ylabel("labels changed" if any("freeal" in info for _, info in rounds) else "examples added")
    intended = [(r, info["without_relabelling"]["evaluation"]["test"][metric]) for r, info in rounds
                if "test" in info.get("without_relabelling", {}).get("evaluation", {})]
    if intended:
        ax.plot(*zip(*intended), marker="x", linestyle="--", label=f"test {metric}, intended labels")
        ax.legend(loc="lower left")
    warmup = [(r, info["freeal"]["warmup_evaluation"]["test"][metric]) for r, info in rounds
              if "test" in info.get("freeal", {}).get("warmup_evaluation", {})]
    if warmup:
        ax.plot(*zip(*warmup), marker="x", linestyle="--", label=f"test {metric}, warm-up on raw labels")
        ax.legend(loc="lower left")
    titles = {"relabel": "PromptMix rounds", "freeal": "FreeAL rounds"}
    ax.set_title(next((title for key, title in titles.items() if any(key in info for _, info in rounds)),
                      "error-extrapolation rounds"))
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
