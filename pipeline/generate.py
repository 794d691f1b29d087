"""Free-form chat completions from the teacher's engines, for writing training examples.

The labelling job asks the teacher for labels; synthesis asks it for texts.
Both run the same engine (:func:`pipeline.teacher.make_engine`) in a pool of
Ray Data actors (:func:`pipeline.teacher.engine_pool_options`), so the
cluster shape, GPU settings and sampling of ``teacher:`` apply to both.

A request is a chat (a list of messages) plus a number of samples; the
answer is its completions and token counts. A request whose prompt does not
fit ``teacher.max_model_len`` comes back with no completions and a reason.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pyarrow as pa

from pipeline import prompts
from pipeline.config import Config
from pipeline.teacher import engine_pool_options, make_engine

REQUESTS = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("messages", pa.string(), nullable=False),  # JSON list of {"role", "content"}
    pa.field("samples", pa.int64(), nullable=False),
])

ANSWERS = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("completions", pa.list_(pa.string()), nullable=False),
    pa.field("prompt_tokens", pa.int64(), nullable=False),
    pa.field("completion_tokens", pa.int64(), nullable=False),
    pa.field("problem", pa.string()),  # why there are no completions
])

PROMPT_TOO_LONG = "prompt too long for teacher.max_model_len"


def request(request_id: str, messages: list[dict[str, str]], samples: int = 1) -> dict[str, Any]:
    return {"request_id": request_id, "messages": json.dumps(messages, ensure_ascii=False), "samples": samples}


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Prompt token ids for a chat; templates without a system role get it folded into the user turn."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # e.g. Gemma's template rejects a system turn
        folded = prompts.fold_system_into_user(messages)
        text = tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


class ChatGenerator:
    """Ray Data actor: one teacher engine answering chat requests."""

    def __init__(self, config: Config):
        self.teacher = config.teacher
        self.llm = make_engine(config.teacher)
        self.tokenizer = self.llm.get_tokenizer()
        self.budget = self.teacher.max_model_len - self.teacher.max_tokens

    def __call__(self, batch: pa.Table) -> pa.Table:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = batch.column("request_id").to_pylist()
        samples = batch.column("samples").to_pylist()
        rendered = [render_chat(self.tokenizer, json.loads(m)) for m in batch.column("messages").to_pylist()]
        fits = [i for i, tokens in enumerate(rendered) if len(tokens) <= self.budget]
        answers = {
            i: {"completions": [], "prompt_tokens": len(rendered[i]), "completion_tokens": 0, "problem": PROMPT_TOO_LONG}
            for i in range(len(ids)) if i not in set(fits)
        }
        if fits:
            params = [
                SamplingParams(n=samples[i], temperature=self.teacher.temperature, top_p=self.teacher.top_p,
                               max_tokens=self.teacher.max_tokens)
                for i in fits
            ]
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=rendered[i]) for i in fits], params,
                                        use_tqdm=False)
            for i, out in zip(fits, outputs):
                answers[i] = {
                    "completions": [sample.text for sample in out.outputs],
                    "prompt_tokens": len(out.prompt_token_ids),
                    "completion_tokens": sum(len(sample.token_ids) for sample in out.outputs),
                    "problem": None,
                }
        rows = [answers[i] for i in range(len(ids))]
        return pa.Table.from_pydict(
            {"request_id": ids, **{key: [row[key] for row in rows] for key in ANSWERS.names[1:]}}, schema=ANSWERS
        )


def generate(config: Config, requests: list[dict[str, Any]], log: Callable[[str], None], what: str) -> pa.Table:
    """Answer every request on a pool of teacher engines; one answer row per request, in request order."""
    import ray.data

    if not requests:
        return ANSWERS.empty_table()
    started = time.time()
    table = pa.Table.from_pylist(requests, schema=REQUESTS)
    answers = ray.data.from_arrow(table).map_batches(
        ChatGenerator, fn_constructor_kwargs={"config": config}, **engine_pool_options(config.teacher)
    )
    done, tokens, batches, last = 0, 0, [], started
    for batch in answers.iter_batches(batch_format="pyarrow", batch_size=None):
        batches.append(batch)
        done += batch.num_rows
        tokens += sum(batch.column("completion_tokens").to_pylist())
        if time.time() - last >= 5 or done == len(requests):
            last = time.time()
            elapsed = max(last - started, 1e-9)
            log(f"[{what}] {done}/{len(requests)} requests | {done / elapsed:.1f} requests/s | "
                f"{tokens / elapsed:.0f} completion tokens/s")
    result = pa.concat_tables(batches)
    if result.num_rows != len(requests):
        raise RuntimeError(f"{what}: {len(requests)} requests sent, {result.num_rows} answers came back")
    order = {request_id: i for i, request_id in enumerate(table.column("request_id").to_pylist())}
    positions = sorted(range(result.num_rows), key=lambda i: order[result.column("request_id")[i].as_py()])
    return result.take(pa.array(positions))
