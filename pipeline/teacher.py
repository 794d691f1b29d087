"""The teacher: one vLLM engine per Ray actor, labelling batches of texts.

``TeacherLabeler`` is the callable class that Ray Data's ``map_batches`` runs
in an actor pool. ``__init__`` loads the engine once (its
:class:`~pipeline.engine_loop.EngineLoop` starts with the first batch); ``__call__`` turns a batch of
(id, text) rows into labelled rows through the pure functions of
:mod:`pipeline.prompts`, :mod:`pipeline.answers` and :mod:`pipeline.votes`,
commits them as one parquet file and returns a one-row summary. Several
batches run at once in one actor (``teacher.max_concurrent_batches`` threads)
and share its engine, so the engine is never drained between batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from typing import Any, Iterator, Optional

import pyarrow as pa

from pipeline import prompts, schemas, storage, tasks
from pipeline.committed import shard_name
from pipeline.engine_loop import EngineLoop, EngineStopped
from pipeline.config import Config, ConfigError, Demo, TaskConfig, TeacherConfig
from pipeline.faults import first_time
from pipeline.tasks.base import TaskType

# How an actor whose engine died ends its process, so that Ray starts it anew (visible in Ray's logs).
ENGINE_DIED_EXIT_CODE = 86
# Parts a batch is split into, in its split runs (see :func:`plan_run`).
SPLIT_FANOUT = 8


def make_engine(teacher: TeacherConfig) -> Any:
    """The teacher's vLLM engine, built from its config (labelling and synthesis share it)."""
    if teacher.engine_in_actor:
        # Read by vLLM when the engine is built; set in this (actor) process only.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    return LLM(
        model=teacher.model,
        tensor_parallel_size=teacher.tensor_parallel_size,
        gpu_memory_utilization=teacher.gpu_memory_utilization,
        max_model_len=teacher.max_model_len,
        enable_prefix_caching=teacher.enable_prefix_caching,
        seed=teacher.seed,
        dtype=teacher.dtype,
        enforce_eager=teacher.enforce_eager,
        **({"kv_cache_memory_bytes": int(teacher.kv_cache_gib * 2**30)} if teacher.kv_cache_gib else {}),
    )


def labeling_pool_options(teacher: TeacherConfig) -> dict[str, Any]:
    """``map_batches`` options for the labelling actors: one engine each, several batches in flight.

    A batch is ``teacher.commit_rows`` rows and becomes one committed file;
    each actor runs ``teacher.max_concurrent_batches`` of them at once (one
    thread each, one shared engine).
    """
    from ray.data import ActorPoolStrategy

    in_flight = teacher.max_concurrent_batches
    return {
        "batch_size": teacher.commit_rows,
        "batch_format": "pyarrow",
        "compute": ActorPoolStrategy(size=teacher.num_actors, max_tasks_in_flight_per_actor=in_flight,
                                     max_concurrent_calls_per_actor=in_flight, enable_true_multi_threading=True),
        "num_gpus": teacher.gpus_per_actor,
        "num_cpus": teacher.cpus_per_actor,
    }


def engine_pool_options(teacher: TeacherConfig) -> dict[str, Any]:
    """``map_batches`` options for a pool of generating actors (synthesis), one engine each."""
    from ray.data import ActorPoolStrategy

    return {
        "batch_size": teacher.batch_size,
        "batch_format": "pyarrow",
        "compute": ActorPoolStrategy(size=teacher.num_actors),
        "num_gpus": teacher.gpus_per_actor,
        "num_cpus": teacher.cpus_per_actor,
    }


class PromptRenderer:
    """Renders the teacher's chat prompt as token ids, truncating long texts.

    The chat template is rendered once around a sentinel standing for the
    text; the parts before and after it are tokenised once, and each text is
    tokenised on its own and spliced in between. That keeps the per-text cost
    to one tokenisation of the text and makes truncation exact: the text gets
    whatever room ``max_model_len - max_tokens`` leaves after the fixed parts,
    and a longer text is cut to it (never the engine's problem) and flagged.
    """

    _SENTINEL = "\u2063RAYDISTILL_TEXT\u2063"

    def __init__(self, tokenizer: Any, task: TaskConfig, max_model_len: int, max_tokens: int):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("teacher.model: its tokenizer has no chat template; use an instruct/chat model")
        self.tokenizer = tokenizer
        try:
            rendered = self._render(task, fold_system=False)
        except Exception:  # templates such as Gemma's reject a system turn
            rendered = self._render(task, fold_system=True)
        if rendered.count(self._SENTINEL) != 1:
            raise ConfigError("teacher.model: its chat template does not place the user's text verbatim")
        prefix, suffix = rendered.split(self._SENTINEL)
        self.prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
        self.suffix_ids = tokenizer.encode(suffix, add_special_tokens=False)
        self.header_tokens = len(self.prefix_ids) + len(self.suffix_ids)
        self.text_budget = max_model_len - max_tokens - self.header_tokens
        if self.text_budget < 16:
            raise ConfigError(
                f"teacher.max_model_len: the prompt without the text takes {self.header_tokens} tokens; "
                f"with teacher.max_tokens={max_tokens} only {self.text_budget} tokens are left for the "
                f"text in teacher.max_model_len={max_model_len}. Raise max_model_len or use fewer demos."
            )

    def render(self, text: str) -> tuple[list[int], bool]:
        """Prompt token ids for ``text``, and whether the text was truncated.

        The text is data: its delimiters are escaped (:func:`prompts.escape_text`) and a special
        token's spelling in it (``<|im_end|>``, ``</s>``) is tokenised as plain text, never as the
        control token, so no text can end its turn or open another role's.
        """
        text_ids = self.tokenizer.encode(prompts.escape_text(text), add_special_tokens=False,
                                         split_special_tokens=True)
        truncated = len(text_ids) > self.text_budget
        return self.prefix_ids + text_ids[: self.text_budget] + self.suffix_ids, truncated

    def _render(self, task: TaskConfig, fold_system: bool) -> str:
        messages = prompts.build_messages(task, self._SENTINEL)
        if fold_system:
            messages = prompts.fold_system_into_user(messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def renderer_with_demos(
    tokenizer: Any, task: TaskConfig, demos: list[Demo], max_model_len: int, max_tokens: int
) -> tuple[PromptRenderer, int]:
    """A renderer for ``task`` with a row's own ``demos``, and how many demos were left out.

    Demos are dropped from the end (the least similar, as FreeAL orders them)
    until the prompt leaves room for the text; with none left that fit, the
    renderer's own error (the instruction alone is too long) is raised.
    """
    for keep in range(len(demos), -1, -1):
        try:
            renderer = PromptRenderer(tokenizer, dataclasses.replace(task, demos=demos[:keep]), max_model_len,
                                      max_tokens)
        except ConfigError:
            if keep == 0:
                raise
            continue
        return renderer, len(demos) - keep
    raise AssertionError("unreachable")


def label_rows(completions: list[list[str]], texts: list[str], kind: TaskType) -> list[dict[str, Any]]:
    """Votes and the task type's columns (labels, consistency, rationale) for each text from its k completions."""
    rows = []
    for samples, text in zip(completions, texts):
        parsed = [kind.parse(sample, text) for sample in samples]
        rows.append({"votes": [kind.vote(p) for p in parsed], **kind.aggregate(parsed, samples, text)})
    return rows


class ProgressSender:
    """Rows and tokens finished in one actor, sent to the driver's progress board at most every ``every`` s."""

    def __init__(self, board: Any, every: float = 1.0):
        self.board, self.every = board, every
        self.rows = self.tokens = 0
        self.sent = time.monotonic()
        self.lock = threading.Lock()

    def add(self, output: Any) -> None:
        with self.lock:
            self.rows += 1
            self.tokens += sum(len(sample.token_ids) for sample in output.outputs)
            due = time.monotonic() - self.sent >= self.every
        if due:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            rows, tokens, self.rows, self.tokens = self.rows, self.tokens, 0, 0
            self.sent = time.monotonic()
        if rows and self.board is not None:
            self.board.add.remote(rows, tokens)


def plan_run(marker: Optional[dict[str, Any]], rows: int, batch_attempts: int,
             fanout: int = SPLIT_FANOUT) -> dict[str, Any]:
    """The next run of a batch of ``rows`` rows, from the marker its unfinished runs left (None: first run).

    A batch's marker is saved when a run begins and deleted when it has committed, so a marker found
    at the start means the runs it counts died: the actor's engine died (or its process or node did)
    while the batch was in flight. The next run is, in order:

    ``shared``: the first run, beside the actor's other batches.
    ``alone``: whole, with no other batch in the actor (until ``batch_attempts`` runs have died), so a
    death can only be this batch's doing.
    ``split``: alone, in ``parts`` (``[start, end)`` row ranges) run and committed one by one; the part
    that was in flight when the last run died is split ``fanout`` ways, and a row in flight alone
    when the engine died is a culprit: it goes to failed/ and is not sent again.
    """
    if marker is None:
        return {"runs": 1, "mode": "shared", "parts": None, "in_flight": None, "culprits": {}}
    runs = marker["runs"] + 1
    culprits = dict(marker.get("culprits", {}))
    parts = marker.get("parts")
    if parts is None:
        if marker["runs"] < batch_attempts:
            return {"runs": runs, "mode": "alone", "parts": None, "in_flight": None, "culprits": culprits}
        parts = _split([0, rows], fanout)
    else:
        parts = [list(p) for p in parts]
        in_flight = marker.get("in_flight")
        if in_flight is not None and in_flight in parts:
            parts.remove(in_flight)
            start, end = in_flight
            if end - start == 1:
                culprits[str(start)] = (
                    f"engine: it died while this row was in flight alone (run {runs - 1} of its batch)")
            else:
                parts = _split(in_flight, fanout) + parts
    return {"runs": runs, "mode": "split", "parts": parts, "in_flight": None, "culprits": culprits}


def _split(part: list[int], fanout: int) -> list[list[int]]:
    start, end = part
    size = end - start
    if size <= fanout:
        return [[i, i + 1] for i in range(start, end)]
    step = -(-size // fanout)
    return [[a, min(a + step, end)] for a in range(start, end, step)]


class _Gate:
    """Batches share the actor's engine; a batch running alone waits for the others and keeps new ones out."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._alone_waiting = 0
        self._alone = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._alone_waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._alone_waiting += 1
            self._cond.wait_for(lambda: not self._alone and self._shared == 0)
            self._alone_waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class TeacherLabeler:
    """Ray Data actor: owns one vLLM engine and commits labelled files, several batches at a time.

    No row stops the job. A row the engine rejects is found by splitting its request group (after
    ``teacher.request_retries`` retries) and goes to ``failed/`` with the error. An engine that dies
    (or stalls for ``teacher.stall_timeout_s``) ends the actor's process: Ray starts the actor anew
    and runs its batches again, first each alone, then in parts (:func:`plan_run`), so that a row
    that kills engines is found and goes to ``failed/`` too.
    """

    def __init__(self, config: Config, data_fs: Any, data_path: str, progress: Any = None,
                 failed_path: Optional[str] = None, attempts_path: Optional[str] = None,
                 faults: Optional[dict[str, str]] = None):
        teacher = config.teacher
        self.config = config
        self.kind = tasks.for_config(config)
        self.schema = self.kind.labelled_schema()
        self.prompt_hash = prompts.prompt_hash(config.task)
        self.data_fs, self.data_path = data_fs, data_path
        self.failed_path, self.attempts_path = failed_path, attempts_path
        self.faults = faults or {}
        self.llm = make_engine(teacher)
        self._engine: Optional[EngineLoop] = None  # started by the first batch (see `engine`)
        self._engine_lock = threading.Lock()
        self._gate = _Gate()
        self.progress = ProgressSender(progress)
        self.renderer = PromptRenderer(
            self.llm.get_tokenizer(), config.task, teacher.max_model_len, teacher.max_tokens
        )
        self._row_renderers: dict[str, tuple[PromptRenderer, int]] = {}
        # Batches render in their own threads; the tokenizer and the renderer cache are shared.
        self._render_lock = threading.Lock()

    @property
    def engine(self) -> EngineLoop:
        """The loop that owns ``self.llm`` from the first batch on; from then on nothing else may call it.

        Started lazily so that code which only borrows the engine and prompts of
        a labeller (the benchmarks' plain-engine arms) can call ``self.llm`` directly.
        """
        with self._engine_lock:
            if self._engine is None:
                self._engine = EngineLoop(self.llm, stall_timeout=self.config.teacher.stall_timeout_s)
            return self._engine

    def _renderer_for(self, demos_json: str) -> tuple[PromptRenderer, int]:
        if demos_json not in self._row_renderers:
            if len(self._row_renderers) > 1024:
                self._row_renderers.clear()
            demos = [Demo(text=d["text"], label=d["label"]) for d in json.loads(demos_json)]
            teacher = self.config.teacher
            self._row_renderers[demos_json] = renderer_with_demos(
                self.llm.get_tokenizer(), self.config.task, demos, teacher.max_model_len, teacher.max_tokens)
        return self._row_renderers[demos_json]

    def _render(self, texts: list[str], demos: Optional[list[str]]) -> tuple[list[Any], int]:
        """Per text: (prompt token ids, truncated) or the exception rendering it raised; and the demos left out."""
        rendered: list[Any] = []
        dropped = 0
        with self._render_lock:
            for i, text in enumerate(texts):
                try:
                    if demos is None:
                        rendered.append(self.renderer.render(text))
                    else:  # each row with its own demos (FreeAL relabelling)
                        renderer, n = self._renderer_for(demos[i])
                        dropped += n
                        rendered.append(renderer.render(text))
                except Exception as err:  # noqa: BLE001 - one row's problem, reported with the row
                    rendered.append(err)
        return rendered, dropped

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return schemas.SHARD_SUMMARY.empty_table()
        ids = batch.column("id").to_pylist()
        name = shard_name(ids)
        marker_path = None if self.attempts_path is None else storage.join(self.attempts_path, name + ".json")
        marker = None
        if marker_path is not None and storage.exists(self.data_fs, marker_path):
            marker = storage.read_json(self.data_fs, marker_path)
        plan = plan_run(marker, batch.num_rows, self.config.teacher.batch_attempts)
        if plan["mode"] != "shared" and storage.exists(self.data_fs, storage.join(self.data_path, name)):
            return self._committed_earlier(name, marker_path, batch.num_rows)
        if marker_path is not None:
            storage.write_json(self.data_fs, marker_path, plan)
        if plan["mode"] == "shared":
            with self._gate.shared():
                summary = self._run_part(batch, name, rerun=False)
        else:
            with self._gate.alone():
                if plan["mode"] == "alone":
                    summary = self._run_part(batch, name, rerun=True)
                else:
                    print(f"[teacher] batch {name}: run {plan['runs']}, in {len(plan['parts'])} parts, alone",
                          file=sys.stderr, flush=True)
                    summary = self._run_split(batch, name, plan, marker_path)
        if marker_path is not None:
            storage.delete_file(self.data_fs, marker_path)
        return pa.Table.from_pylist([summary], schema=schemas.SHARD_SUMMARY)

    def _committed_earlier(self, name: str, marker_path: Optional[str], rows: int) -> pa.Table:
        """The batch was committed by a run that died before it could delete its marker."""
        if marker_path is not None:
            storage.delete_file(self.data_fs, marker_path)
        committed = storage.read_parquet(self.data_fs, storage.join(self.data_path, name), columns=["id"])
        failed = 0
        if self.failed_path is not None and storage.exists(self.data_fs, storage.join(self.failed_path, name)):
            failed = storage.read_parquet(self.data_fs, storage.join(self.failed_path, name), columns=["id"]).num_rows
        # Labelled in this job, by the run whose summary was lost with it (its token counts with it).
        summary = {"shard": name, "rows": committed.num_rows, "failed": failed, "abstentions": 0,
                   "prompt_tokens": 0, "completion_tokens": 0, "demos_dropped": 0, "seconds": 0.0}
        print(f"[teacher] batch {name}: committed by an earlier run ({committed.num_rows} of {rows} rows)",
              file=sys.stderr, flush=True)
        return pa.Table.from_pylist([summary], schema=schemas.SHARD_SUMMARY)

    def _run_split(self, batch: pa.Table, name: str, plan: dict[str, Any], marker_path: Optional[str]) -> dict:
        """Run the plan's parts one by one, each committed as a file of its own; then the culprits' file."""
        total = {"shard": name, "rows": 0, "failed": 0, "abstentions": 0, "prompt_tokens": 0,
                 "completion_tokens": 0, "demos_dropped": 0, "seconds": 0.0}
        culprits = {int(i): reason for i, reason in plan["culprits"].items()}
        while plan["parts"]:
            start, end = plan["parts"][0]
            rows = [i for i in range(start, end) if i not in culprits]
            plan["in_flight"] = [start, end]
            if marker_path is not None:
                storage.write_json(self.data_fs, marker_path, plan)
            if rows:
                part = batch.take(pa.array(rows))
                summary = self._run_part(part, shard_name(part.column("id").to_pylist()), rerun=True)
                for key in total:
                    if key != "shard":
                        total[key] += summary[key]
            plan["parts"].pop(0)
            plan["in_flight"] = None
            if marker_path is not None:  # the part is done: a death from here on is not its doing
                storage.write_json(self.data_fs, marker_path, plan)
        if culprits:
            positions = sorted(culprits)
            failed = batch.take(pa.array(positions))
            self._write_failed(shard_name(failed.column("id").to_pylist()), failed.column("id").to_pylist(),
                               failed.column("text").to_pylist(), [culprits[i] for i in positions])
            total["failed"] += len(positions)
        return total

    def _run_part(self, batch: pa.Table, name: str, rerun: bool) -> dict[str, Any]:
        """Label ``batch``; commit its labelled rows as ``name`` and the rows it could not label in failed/.

        ``rerun``: an earlier run of this batch may have left a failed/ file under ``name``, which a
        clean run must remove (a first run has none to look for: one storage call less per batch).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        teacher = self.config.teacher
        ids = batch.column("id").to_pylist()
        texts = batch.column("text").to_pylist()
        demos = batch.column("demos").to_pylist() if "demos" in batch.column_names else None
        # One request per text with n=k: the prompt is prefilled once for all k
        # samples. The engine-wide seed (teacher.seed) makes runs repeatable;
        # per-request seeds are not supported by vLLM's CPU sampler.
        params = SamplingParams(
            n=teacher.samples,
            temperature=teacher.temperature,
            top_p=teacher.top_p,
            max_tokens=teacher.max_tokens,
        )
        # Rendered and handed to the engine teacher.batch_size texts at a time, so
        # the engine starts on a batch's first texts while the rest are tokenised.
        rendered: list[Any] = []
        requests: list[Any] = []
        problems: dict[int, str] = {}
        chunks, demos_dropped = [], 0
        for start in range(0, len(ids), teacher.batch_size):
            end = start + teacher.batch_size
            chunk, dropped = self._render(texts[start:end], None if demos is None else demos[start:end])
            demos_dropped += dropped
            positions = []
            for offset, item in enumerate(chunk):
                position = start + offset
                rendered.append(item)
                if isinstance(item, Exception):
                    problems[position] = f"prompt: {item!r}"[:2000]
                    requests.append(None)
                    continue
                requests.append(TokensPrompt(prompt_token_ids=self._injected(texts[position], item[0])))
                positions.append(position)
            if positions:
                chunks.append((positions, self._submit([requests[p] for p in positions], params, texts, positions)))
        outputs: dict[int, Any] = {}
        for positions, future in chunks:
            self._settle(positions, future, requests, params, texts, outputs, problems, teacher.request_retries)
        self.progress.flush()

        done = sorted(outputs)
        labelled = label_rows([[sample.text for sample in outputs[p].outputs] for p in done],
                              [texts[p] for p in done], self.kind)
        prompt_tokens = [len(outputs[p].prompt_token_ids) for p in done]
        completion_tokens = [sum(len(s.token_ids) for s in outputs[p].outputs) for p in done]
        if problems:
            failed = sorted(problems)
            self._write_failed(name, [ids[p] for p in failed], [texts[p] for p in failed],
                               [problems[p] for p in failed])
        elif rerun and self.failed_path is not None:  # a file an earlier run of this batch left, now labelled
            storage.delete_file(self.data_fs, storage.join(self.failed_path, name))
        if done:
            columns = {
                "id": [ids[p] for p in done],
                "text": [texts[p] for p in done],
                **{key: [row[key] for row in labelled] for key in labelled[0]},
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "truncated": [rendered[p][1] for p in done],
                "teacher_model": [teacher.model] * len(done),
                "prompt_hash": [self.prompt_hash] * len(done),
            }
            table = pa.Table.from_pydict(columns, schema=self.schema)
            storage.write_parquet_atomic(self.data_fs, storage.join(self.data_path, name), table)
        return {
            "shard": name,
            "rows": len(done),
            "failed": len(problems),
            "abstentions": sum(1 for row in labelled if row["n_valid"] == 0),
            "prompt_tokens": sum(prompt_tokens),
            "completion_tokens": sum(completion_tokens),
            "demos_dropped": demos_dropped,
            # The engine's busy time since this actor's last summary: summed over
            # all summaries it is each engine's working time, start-up excluded.
            "seconds": self.engine.take_busy_seconds(),
        }

    def _submit(self, requests: list[Any], params: Any, texts: list[str], positions: list[int]) -> Any:
        try:
            future = self.engine.submit(requests, params, on_output=self.progress.add)
        except EngineStopped as err:  # it died while another batch had it
            self._engine_died(err)
        marker = self.faults.get("engine_death")
        if marker and any(marker in texts[p] for p in positions):
            self._kill_engine()
        return future

    def _settle(self, positions: list[int], future: Any, requests: list[Any], params: Any, texts: list[str],
                outputs: dict[int, Any], problems: dict[int, str], retries: int) -> None:
        """Wait for a group's outputs; a group the engine rejects is retried, then split to find its bad rows."""
        try:
            results = future.result()
        except EngineStopped as err:
            self._engine_died(err)
        except Exception as err:  # noqa: BLE001 - a rejected request group
            if retries > 0:
                retry = self._submit([requests[p] for p in positions], params, texts, positions)
                self._settle(positions, retry, requests, params, texts, outputs, problems, retries - 1)
            elif len(positions) == 1:
                problems[positions[0]] = f"engine: {err!r}"[:2000]
            else:
                halves = [positions[: len(positions) // 2], positions[len(positions) // 2:]]
                futures = [self._submit([requests[p] for p in half], params, texts, half) for half in halves]
                for half, half_future in zip(halves, futures):
                    self._settle(half, half_future, requests, params, texts, outputs, problems, 0)
            return
        outputs.update(zip(positions, results))

    def _write_failed(self, name: str, ids: list[str], texts: list[str], reasons: list[str]) -> None:
        print(f"[teacher] {len(ids)} row(s) could not be labelled (first: id {ids[0]!r}: {reasons[0][:300]})",
              file=sys.stderr, flush=True)
        if self.failed_path is None:
            return
        table = pa.Table.from_pydict({"id": ids, "text": texts, "reason": reasons}, schema=schemas.FAILED)
        storage.write_parquet_atomic(self.data_fs, storage.join(self.failed_path, name), table)

    def _engine_died(self, err: BaseException) -> None:
        """End this process: Ray starts the actor anew and runs its batches again (see :func:`plan_run`).

        A dead engine cannot be trusted to free its GPU memory or to start again in this process
        (a CUDA error poisons the context), so the whole actor goes.
        """
        print(f"[teacher] the engine died ({err!r}); this actor exits so that Ray starts it anew",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(ENGINE_DIED_EXIT_CODE)

    def _injected(self, text: str, token_ids: list[int]) -> list[int]:
        marker = self.faults.get("engine_error")
        if marker and marker in text:
            return token_ids + token_ids[-1:] * (self.config.teacher.max_model_len + 1)  # past the context
        return token_ids

    def _kill_engine(self) -> None:
        if not first_time(self.faults.get("engine_death_once")):
            return
        import psutil

        children = psutil.Process().children(recursive=True)
        if children and not self.config.teacher.engine_in_actor:
            for child in children:  # vLLM's engine core process
                child.kill()
        else:
            self.engine.stop(RuntimeError("injected fault: the engine died"))
