"""Labelling throughput: plain vLLM on the driver vs the Ray Data job, and n=k vs k requests.

One run, one model, the same prompts and sampling settings in every arm:

  plain n=k     ``LLM.generate`` on the driver, one request per text with n=k
  plain k x n=1 the same engine, k copies of each prompt with n=1 (prefix caching as configured)
  ... no cache  both plain arms again on an engine with prefix caching off, where k
                separate requests must prefill the prompt k times
  job           ``pipeline.labeling.run_labeling`` on the same N rows, into a fresh temp output:
                batches of ``teacher.commit_rows`` with ``teacher.max_concurrent_batches`` in flight
                per actor, one engine kept busy across them (the config's settings)
  job per-batch the same job as it was designed before: one engine call per ``teacher.batch_size``
                rows, each call drained before the next (``commit_rows = batch_size``,
                ``max_concurrent_batches = 1``)

``--variable-lengths MEAN`` makes the tiny teacher end its answers at random,
MEAN tokens on average (its end-of-sequence logit is set from the model's own
logits, see ``variable_length_teacher``), with ``max_tokens`` 8 x MEAN: answers
then vary from one token to the cap, as chain-of-thought answers do, and a
drained batch waits for its longest.

The job's labelling time includes starting the engine inside its actor, so the
plain engine's start-up is printed too, and a "plain n=k incl. start-up" row
compares like with like. Samples are random, so completion lengths differ from
arm to arm: read completion tokens/s next to rows/s.

    .venv/bin/python bench/label_throughput.py --rows 128 [--config CONFIG] [--no-smoke] \
        [--repeats R] [--variable-lengths MEAN] [--json OUT]

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


def timed_generate(llm: Any, prompts: list[Any], params: Any, rows: int) -> dict[str, Any]:
    """Time one ``generate`` call from an empty prefix cache."""
    llm.reset_prefix_cache()  # no arm may reuse the KV blocks of the one before
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    lengths = sorted(len(sample.token_ids) for out in outputs for sample in out.outputs)
    return {"rows": rows, "seconds": seconds, "completion_tokens": sum(lengths),
            "answer_tokens_p10_p50_p90": [lengths[int(q * (len(lengths) - 1))] for q in (0.1, 0.5, 0.9)]}


def variable_length_teacher(config: Config, mean: int, folder: Path) -> Config:
    """A copy of the tiny teacher whose answers end after ``mean`` tokens on average, at random.

    The end-of-sequence row of the output head is set to read only the
    model's steady feature (hidden dimension 0, see ``pipeline.smoke``) with
    a weight chosen from the model's own logits on a sampled continuation, so
    that end-of-sequence has probability about 1/``mean`` at each step.
    """
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.teacher.model)
    model = AutoModelForCausalLM.from_pretrained(config.teacher.model)
    eos = tokenizer.eos_token_id
    prompt = tokenizer("profit sales rose fell market shares quarter growth", return_tensors="pt").input_ids
    torch.manual_seed(0)
    with torch.no_grad():
        sequence = model.generate(prompt, max_new_tokens=64, do_sample=True, pad_token_id=eos)
        out = model(sequence, output_hidden_states=True)
        steady = out.hidden_states[-1][0, :, 0].median().item()
        others = torch.cat([out.logits[0, :, :eos], out.logits[0, :, eos + 1:]], dim=1)
        rest = torch.logsumexp(others, dim=1).median().item()
        head = model.lm_head.weight
        head[eos, :] = 0.0
        head[eos, 0] = (rest + math.log(1.0 / (mean - 1))) / steady
    path = folder / "variable_length_teacher"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    teacher = dataclasses.replace(config.teacher, model=str(path), max_tokens=8 * mean)
    return dataclasses.replace(config, teacher=teacher)


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


def figures(plain: dict[str, Any], uncached: dict[str, Any], report: dict[str, Any],
            per_batch: dict[str, Any]) -> dict[str, Any]:
    """The table's rows and ratios from the plain arms and the two jobs' reports."""
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
        "job per-batch (former), actor busy time": rates(
            per_batch["rows"]["labelled_this_run"], per_batch["time"]["busy_seconds"],
            per_batch["tokens"]["completion_this_run"]),
        "job per-batch (former), labelling": rates(
            per_batch["rows"]["labelled_this_run"], per_batch["time"]["labelling_seconds"],
            per_batch["tokens"]["completion_this_run"]),
    }
    job = arms["job, actor busy time"]["rows_per_second"]
    job_with_start_up = arms["job labelling (incl. actor start-up)"]["rows_per_second"]
    plain_rate = arms["plain n=k"]["rows_per_second"]
    plain_with_start_up = arms["plain n=k incl. start-up"]["rows_per_second"]
    former = arms["job per-batch (former), actor busy time"]["rows_per_second"]
    return {
        "arms": arms,
        "plain_engine_start_up": {
            "load_seconds": round(plain["load_seconds"], 2),
            "warmup_seconds": round(plain["warmup_seconds"], 2),
        },
        "ratios": {
            "job_over_plain_rows_per_second": round(job / plain_rate, 3),
            "job_over_plain_incl_start_up": round(job_with_start_up / plain_with_start_up, 3),
            "job_over_former_per_batch_job": round(job / former, 3),
            "k_separate_over_n_k_time": round(separate["seconds"] / n_k["seconds"], 3),
            "k_separate_over_n_k_time_no_prefix_cache": round(separate_nc["seconds"] / n_k_nc["seconds"], 3),
        },
    }


def print_table(results: dict[str, Any], config: Config, smoke: bool) -> None:
    teacher, start_up = config.teacher, results["plain_engine_start_up"]
    print(f"\nteacher {teacher.model}{' (smoke: tiny random model)' if smoke else ''}")
    print(f"k={teacher.samples}, max_tokens={teacher.max_tokens}, temperature={teacher.temperature}, "
          f"prefix caching {'on' if teacher.enable_prefix_caching else 'off'}, "
          f"job batch_size={teacher.batch_size}, commit_rows={teacher.commit_rows}, "
          f"max_concurrent_batches={teacher.max_concurrent_batches}, num_actors={teacher.num_actors}")
    print(f"answer tokens per sample (plain n=k) p10/p50/p90: {results['answer_tokens_p10_p50_p90']}")
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
    print(f"job / former per-batch job (busy time):    {ratios['job_over_former_per_batch_job']:.3f}")
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
    parser.add_argument("--variable-lengths", type=int, metavar="MEAN",
                        help="smoke teacher whose answers end at random, MEAN tokens on average")
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
        if args.variable_lengths:
            if not smoke:
                parser.error("--variable-lengths reshapes the smoke teacher; use it with --smoke")
            config = variable_length_teacher(config, args.variable_lengths, workdir)
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
        teacher = config.teacher
        former = dataclasses.replace(config, teacher=dataclasses.replace(
            teacher, commit_rows=teacher.batch_size, max_concurrent_batches=1))
        former = dataclasses.replace(former, data=dataclasses.replace(
            former.data, output=str(workdir / "labels-per-batch")))
        per_batch = run_labeling(former, smoke=smoke)
        results = {"repeats": args.repeats, "answer_tokens_p10_p50_p90": plain["n_k"]["answer_tokens_p10_p50_p90"],
                   **figures(plain, uncached, report, per_batch)}

    print_table(results, config, smoke)
    if args.json:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        record = {"config": args.config, "smoke": smoke, "device": device, **results, "job_report": report,
                  "per_batch_job_report": per_batch}
        args.json.write_text(json.dumps(record, indent=2))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
