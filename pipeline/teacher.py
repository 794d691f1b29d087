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

import dataclasses
import hashlib
import json
import os
import threading
import time
from typing import Any, Optional

import pyarrow as pa

from pipeline import prompts, schemas, storage
from pipeline.answers import parse_answer
from pipeline.engine_loop import EngineLoop
from pipeline.config import ABSTAIN, Config, ConfigError, Demo, TaskConfig, TeacherConfig
from pipeline.votes import aggregate_votes

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
        """Prompt token ids for ``text``, and whether the text was truncated."""
        text_ids = self.tokenizer.encode(text, add_special_tokens=False)
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


def shard_name(ids: list[str]) -> str:
    """Deterministic shard name from the ids it holds: a retried batch overwrites
    its own earlier shard instead of adding a second copy of its rows."""
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:24]
    return f"part-{digest}.parquet"


def label_rows(
    completions: list[list[str]], label_names: list[str]
) -> list[dict[str, Any]]:
    """Votes, labels and rationale for each text from its k completions."""
    rows = []
    for samples in completions:
        votes = [parse_answer(text, label_names) or ABSTAIN for text in samples]
        result = aggregate_votes(votes, label_names)
        rationale: Optional[str] = None
        if result.hard_label is not None:
            rationale = samples[votes.index(result.hard_label)].strip()
        rows.append(
            {
                "votes": votes,
                "hard_label": result.hard_label,
                "soft_label": result.soft_label,
                "consistency": result.consistency,
                "n_valid": result.n_valid,
                "rationale": rationale,
            }
        )
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


class TeacherLabeler:
    """Ray Data actor: owns one vLLM engine and commits labelled files, several batches at a time."""

    def __init__(self, config: Config, data_fs: Any, data_path: str, progress: Any = None):
        teacher = config.teacher
        self.config = config
        self.label_names = config.task.label_names
        self.prompt_hash = prompts.prompt_hash(config.task)
        self.data_fs, self.data_path = data_fs, data_path
        self.llm = make_engine(teacher)
        self._engine: Optional[EngineLoop] = None  # started by the first batch (see `engine`)
        self._engine_lock = threading.Lock()
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
                self._engine = EngineLoop(self.llm)
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

    def _render(self, texts: list[str], demos: Optional[list[str]]) -> tuple[list[tuple[list[int], bool]], int]:
        """Prompt token ids and truncation flags for ``texts``, and how many demos were left out."""
        with self._render_lock:
            if demos is None:
                return [self.renderer.render(text) for text in texts], 0
            rendered, dropped = [], 0
            for text, demos_json in zip(texts, demos):  # each row with its own demos (FreeAL relabelling)
                renderer, n = self._renderer_for(demos_json)
                dropped += n
                rendered.append(renderer.render(text))
            return rendered, dropped

    def __call__(self, batch: pa.Table) -> pa.Table:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        teacher = self.config.teacher
        if batch.num_rows == 0:
            return schemas.SHARD_SUMMARY.empty_table()
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
        rendered: list[tuple[list[int], bool]] = []
        futures, demos_dropped = [], 0
        for start in range(0, len(ids), teacher.batch_size):
            end = start + teacher.batch_size
            chunk, dropped = self._render(texts[start:end], None if demos is None else demos[start:end])
            rendered += chunk
            demos_dropped += dropped
            requests = [TokensPrompt(prompt_token_ids=token_ids) for token_ids, _ in chunk]
            futures.append(self.engine.submit(requests, params, on_output=self.progress.add))
        outputs = [out for future in futures for out in future.result()]
        self.progress.flush()
        completions = [[sample.text for sample in out.outputs] for out in outputs]
        labelled = label_rows(completions, self.label_names)
        prompt_tokens = [len(out.prompt_token_ids) for out in outputs]
        completion_tokens = [sum(len(s.token_ids) for s in out.outputs) for out in outputs]
        columns = {
            "id": ids,
            "text": texts,
            **{key: [row[key] for row in labelled] for key in labelled[0]},
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "truncated": [flag for _, flag in rendered],
            "teacher_model": [teacher.model] * len(ids),
            "prompt_hash": [self.prompt_hash] * len(ids),
        }
        table = pa.Table.from_pydict(columns, schema=schemas.LABELLED)
        name = shard_name(ids)
        storage.write_parquet_atomic(self.data_fs, storage.join(self.data_path, name), table)
        return pa.Table.from_pydict(
            {
                "shard": [name],
                "rows": [len(ids)],
                "abstentions": [sum(1 for row in labelled if row["hard_label"] is None)],
                "prompt_tokens": [sum(prompt_tokens)],
                "completion_tokens": [sum(completion_tokens)],
                "demos_dropped": [demos_dropped],
                # The engine's busy time since this actor's last summary: summed over
                # all summaries it is each engine's working time, start-up excluded.
                "seconds": [self.engine.take_busy_seconds()],
            },
            schema=schemas.SHARD_SUMMARY,
        )
