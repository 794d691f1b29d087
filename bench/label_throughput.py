"""Labelling throughput: plain vLLM on the driver vs the Ray Data job, and n=k vs k requests.

One run, one model, the same prompts and sampling settings in every arm:

  plain n=k     ``LLM.generate`` on the driver, one request per text with n=k
  plain k x n=1 the same engine, k copies of each prompt with n=1 (prefix caching as configured)
  ... no cache  both plain arms again on an engine with prefix caching off, where k
                separate requests must prefill the prompt k times
  job           ``pipeline.labeling.run_labeling`` on the same N rows, into a fresh temp output

The job's labelling time includes starting the engine inside its actor, so the
plain engine's start-up is printed too, and a "plain n=k incl. start-up" row
compares like with like. Samples are random, so completion lengths differ from
arm to arm: read completion tokens/s next to rows/s.

    .venv/bin/python bench/label_throughput.py --rows 128 [--config CONFIG] [--no-smoke] \
        [--repeats R] [--json OUT]

``--smoke`` (the default without a GPU) swaps in a tiny random teacher built on
the spot; its figures measure the machinery, not a real model.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import first_rows, smoke_teacher

from pipeline.config import Config, load_config
from pipeline.labeling import run_labeling
from pipeline.teacher import TeacherLabeler


def with_rows(config: Config, rows: list[tuple[str, str]], workdir: Path) -> Config:
    """The config pointed at an N-row copy of its input and a fresh output folder."""
    path = workdir / "input.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for row_id, text in rows:
            out.write(json.dumps({config.data.id_column: row_id, config.data.text_column: text}) + "\n")
    data = dataclasses.replace(config.data, input=str(path), format="jsonl", output=str(workdir / "labels"))
    return dataclasses.replace(config, data=data)


def timed_generate(llm: Any, prompts: list[Any], params: Any, rows: int) -> dict[str, float]:
    """Time one ``generate`` call from an empty prefix cache."""
    llm.reset_prefix_cache()  # no arm may reuse the KV blocks of the one before
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(sample.token_ids) for out in outputs for sample in out.outputs)
    return {"rows": rows, "seconds": seconds, "completion_tokens": tokens}


def bench_plain(config: Config, texts: list[str], repeats: int) -> dict[str, Any]:
    """Arms (a) and (c) on one engine in this process, best of ``repeats``; freed before returning."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    teacher = config.teacher
    started = time.perf_counter()
    # The job's own engine set-up (same LLM arguments, same PromptRenderer);
    # its shard-writing half is never called here.
    labeler = TeacherLabeler(config, data_fs=None, data_path="")
    load_seconds = time.perf_counter() - started
    llm, renderer = labeler.llm, labeler.renderer
    prompts = [TokensPrompt(prompt_token_ids=renderer.render(text)[0]) for text in texts]

    def sampling(n: int) -> SamplingParams:
        return SamplingParams(
            n=n, temperature=teacher.temperature, top_p=teacher.top_p, max_tokens=teacher.max_tokens
        )

    k = teacher.samples
    warmup = timed_generate(llm, prompts[:2], sampling(k), 2)  # first-call costs stay out of the arms
    arms = {
        "n_k": (prompts, sampling(k)),
        "k_separate": ([p for p in prompts for _ in range(k)], sampling(1)),
    }
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):  # alternate the arms so neither always runs first
        for name, (requests, params) in arms.items():
            run = timed_generate(llm, requests, params, len(texts))
            if name not in best or run["seconds"] < best[name]["seconds"]:
                best[name] = run
    del labeler, llm  # the job's actor must not share memory with this engine
    gc.collect()
    return {"load_seconds": load_seconds, "warmup_seconds": warmup["seconds"], **best}


def rates(rows: int, seconds: float, completion_tokens: int) -> dict[str, float]:
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 3),
        "completion_tokens_per_second": round(completion_tokens / seconds, 1),
        "completion_tokens": completion_tokens,
    }


def figures(plain: dict[str, Any], uncached: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The table's rows and ratios from the plain arms and the job's report."""
    n_k, separate = plain["n_k"], plain["k_separate"]
    n_k_nc, separate_nc = uncached["n_k"], uncached["k_separate"]
    start_up = plain["load_seconds"] + plain["warmup_seconds"]
    done, time_ = report["rows"]["labelled_this_run"], report["time"]
    job_tokens = report["tokens"]["completion_this_run"]
    arms = {
        "plain n=k": rates(n_k["rows"], n_k["seconds"], n_k["completion_tokens"]),
        "plain k x n=1": rates(separate["rows"], separate["seconds"], separate["completion_tokens"]),
        "plain n=k, no prefix cache": rates(n_k_nc["rows"], n_k_nc["seconds"], n_k_nc["completion_tokens"]),
        "plain k x n=1, no prefix cache": rates(
            separate_nc["rows"], separate_nc["seconds"], separate_nc["completion_tokens"]
        ),
        "plain n=k incl. start-up": rates(n_k["rows"], n_k["seconds"] + start_up, n_k["completion_tokens"]),
        "job, actor busy time": rates(done, time_["busy_seconds"], job_tokens),
        "job labelling (incl. actor start-up)": rates(done, time_["labelling_seconds"], job_tokens),
        "job end to end": rates(done, time_["wall_seconds"], job_tokens),
    }
    job = arms["job, actor busy time"]["rows_per_second"]
    job_with_start_up = arms["job labelling (incl. actor start-up)"]["rows_per_second"]
    plain_rate = arms["plain n=k"]["rows_per_second"]
    plain_with_start_up = arms["plain n=k incl. start-up"]["rows_per_second"]
    return {
        "arms": arms,
        "plain_engine_start_up": {
            "load_seconds": round(plain["load_seconds"], 2),
            "warmup_seconds": round(plain["warmup_seconds"], 2),
        },
        "ratios": {
            "job_over_plain_rows_per_second": round(job / plain_rate, 3),
            "job_over_plain_incl_start_up": round(job_with_start_up / plain_with_start_up, 3),
            "k_separate_over_n_k_time": round(separate["seconds"] / n_k["seconds"], 3),
            "k_separate_over_n_k_time_no_prefix_cache": round(separate_nc["seconds"] / n_k_nc["seconds"], 3),
        },
    }


def print_table(results: dict[str, Any], config: Config, smoke: bool) -> None:
    teacher, start_up = config.teacher, results["plain_engine_start_up"]
    print(f"\nteacher {teacher.model}{' (smoke: tiny random model)' if smoke else ''}")
    print(f"k={teacher.samples}, max_tokens={teacher.max_tokens}, temperature={teacher.temperature}, "
          f"prefix caching {'on' if teacher.enable_prefix_caching else 'off'}, "
          f"job batch_size={teacher.batch_size}, num_actors={teacher.num_actors}")
    print(f"plain arms: fastest of {results['repeats']} runs each; job: one run")
    print(f"plain engine start-up: load {start_up['load_seconds']}s, "
          f"first request {start_up['warmup_seconds']}s")
    print(f"\n{'arm':<38}{'rows':>6}{'seconds':>10}{'rows/s':>10}{'compl. tok/s':>14}")
    for name, arm in results["arms"].items():
        print(f"{name:<38}{arm['rows']:>6}{arm['seconds']:>10.2f}{arm['rows_per_second']:>10.2f}"
              f"{arm['completion_tokens_per_second']:>14.1f}")
    ratios = results["ratios"]
    print(f"\njob / plain throughput (rows/s):           {ratios['job_over_plain_rows_per_second']:.3f}")
    print(f"job / plain, both incl. engine start-up:   {ratios['job_over_plain_incl_start_up']:.3f}")
    print(f"(k separate) / (n=k) time:                 {ratios['k_separate_over_n_k_time']:.3f}")
    print(f"  the same, prefix caching off:            {ratios['k_separate_over_n_k_time_no_prefix_cache']:.3f}")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="bench/financial_sentiment.yaml")
    parser.add_argument("--rows", type=int, default=256, help="first N rows of the config's input")
    parser.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=None,
                        help="tiny random teacher built on the spot (default: on when no GPU)")
    parser.add_argument("--repeats", type=int, default=2, help="plain arms: keep the fastest of R runs")
    parser.add_argument("--max-tokens", type=int, help="override teacher.max_tokens (small: a prefill-bound load)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.rows < 1 or args.repeats < 1:
        parser.error("--rows and --repeats must be >= 1")
    smoke = not torch.cuda.is_available() if args.smoke is None else args.smoke

    with tempfile.TemporaryDirectory(prefix="label_throughput-") as tmp:
        workdir = Path(tmp)
        config = load_config(args.config)
        if smoke:
            config = smoke_teacher(config, root=workdir / "smoke")
        if args.max_tokens:
            config = dataclasses.replace(
                config, teacher=dataclasses.replace(config.teacher, max_tokens=args.max_tokens)
            )
        rows = first_rows(config, args.rows)
        config = with_rows(config, rows, workdir)
        print(f"[bench] {len(rows)} rows from {args.config}", flush=True)

        texts = [text for _, text in rows]
        plain = bench_plain(config, texts, args.repeats)
        no_cache = dataclasses.replace(
            config, teacher=dataclasses.replace(config.teacher, enable_prefix_caching=False)
        )
        uncached = bench_plain(no_cache, texts, args.repeats)
        report = run_labeling(config, smoke=smoke)
        results = {"repeats": args.repeats, **figures(plain, uncached, report)}

    print_table(results, config, smoke)
    if args.json:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        record = {"config": args.config, "smoke": smoke, "device": device, **results, "job_report": report}
        args.json.write_text(json.dumps(record, indent=2))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
