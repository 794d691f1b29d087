"""The student: a Hugging Face encoder fine-tuned with Ray Train (DDP).

``train_loop_per_worker`` reads like plain PyTorch: model, optimizer and
schedule, then epochs over this worker's shard of the Ray Dataset. Ray Train
wraps the model in DDP, gives each worker its own shard, and keeps the
checkpoints; a job started again with the same run folder resumes from the
latest one.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import tempfile
import time
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

STATE_FILE = "training_state.pt"
HISTORY_FILE = "history.json"
# The scores (val_macro_f1, train_loss) a checkpoint inside an epoch reports: worse than any epoch's,
# so Ray Train's ranking never keeps one for its score, only as the latest.
PARTIAL_SCORE = (-1.0, 1e30)


def load_student(model: str, label_names: Sequence[str], head: str = "sequence", **config: Any) -> tuple[Any, Any]:
    """Tokenizer and a model with one output per name of ``label_names``: a sequence classifier, or
    with ``head="token"`` a token classifier (one output per tag). ``config``: more model config
    (``problem_type``)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    model_class = {"sequence": AutoModelForSequenceClassification, "token": AutoModelForTokenClassification}[head]
    tokenizer = AutoTokenizer.from_pretrained(model)
    classifier = model_class.from_pretrained(
        model,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        ignore_mismatched_sizes=True,  # a checkpoint with another head gets a fresh one
        **config,
    )
    return tokenizer, classifier


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Token ids and attention mask, truncated to ``max_length`` and padded to the longest text.

    Padded positions are masked out and only cost time, so a batch is never
    padded further than its own longest text (training and inference alike).
    """
    encoded = tokenizer(texts, max_length=max_length, truncation=True, padding="longest", return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


BUCKET_BATCHES = 50  # batches drawn together, then cut by text length (length-bucketed batches)
LENGTH_BUCKET_RATIO = 1.15  # texts whose lengths differ by less than this factor share a length bucket


def length_bucketed(pools: Iterable[dict[str, np.ndarray]], batch_size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Training batches of ``batch_size`` rows with little padding.

    Each pool (``batch_size * BUCKET_BATCHES`` shuffled rows) is ordered by length bucket (lengths within a
    factor ``LENGTH_BUCKET_RATIO``), at random within a bucket, and cut into batches, which then go in a
    seeded random order. A batch holds texts of about one length, so padding it to its longest text adds
    little. Buckets rather than an exact sort: where length goes with the label (a cue word longer in one
    class than another), an exact sort would fill batches with one class. With the same pools and seed the
    batches are the same, which a resumed epoch relies on.
    """
    rng = np.random.default_rng(seed)
    for pool in pools:
        lengths = text_lengths(pool["text"])
        buckets = np.floor(np.log1p(lengths) / np.log(LENGTH_BUCKET_RATIO))
        order = np.lexsort((rng.random(len(lengths)), buckets))
        batches = [order[first:first + batch_size] for first in range(0, len(order), batch_size)]
        for index in rng.permutation(len(batches)):
            yield {column: values[batches[index]] for column, values in pool.items()}


def prefetched(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced by a background thread up to ``depth`` ahead: tokenising the next batches
    overlaps the training step. An error in the thread is raised here."""
    import queue
    import threading

    done = object()
    buffer: queue.Queue = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in items:
                buffer.put(item)
            buffer.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            buffer.put(err)

    threading.Thread(target=produce, daemon=True, name="raydistill-collate").start()
    while (item := buffer.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


@torch.no_grad()
def predict_proba(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64,
                  sort_by_length: bool = True) -> np.ndarray:
    """Class probabilities (rows x classes) for ``texts`` (see :func:`predict_with_embeddings`)."""
    return predict_with_embeddings(model, tokenizer, texts, max_length, batch_size, embeddings=False,
                                   sort_by_length=sort_by_length)[0]


@torch.no_grad()
def predict_with_embeddings(
    model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64, embeddings: bool = True,
    sort_by_length: bool = True,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Class probabilities and, with ``embeddings``, the encoder's mean-pooled last hidden state per text.

    Probabilities are a softmax over the classes, or for a multi-label model (``problem_type``
    ``multi_label_classification``) one sigmoid per label. ``model``: a Hugging Face model, or an
    :class:`~pipeline.onnx_student.OnnxStudent`. With ``sort_by_length`` the texts go through the model
    in order of length, so that a batch padded to its longest text is padded little; the results come
    back in the order of ``texts``.
    """
    model.eval()
    multi_label = model.config.problem_type == "multi_label_classification"
    order = length_order(texts) if sort_by_length else np.arange(len(texts))
    probabilities, pooled = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, [texts[i] for i in order[start:start + batch_size]], max_length)
        inputs = {k: torch.from_numpy(v).to(model.device) for k, v in batch.items()}
        out = model(**inputs, output_hidden_states=embeddings)
        logits = out.logits.float()
        probabilities.append((logits.sigmoid() if multi_label else logits.softmax(dim=-1)).cpu().numpy())
        if embeddings:
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            hidden = out.hidden_states[-1].float()
            pooled.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).cpu().numpy())
    if not probabilities:
        empty = np.zeros((0, model.config.num_labels))
        return empty, (np.zeros((0, model.config.hidden_size)) if embeddings else None)
    restore = np.argsort(order)  # position of each text in the sorted order
    return (np.concatenate(probabilities)[restore],
            np.concatenate(pooled)[restore] if embeddings else None)


def text_lengths(texts: Sequence[str]) -> np.ndarray:
    """Each text's length in characters: a cheap proxy for its tokens, to batch texts of like lengths."""
    return np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Indices of ``texts`` from the shortest to the longest (:func:`text_lengths`)."""
    return np.argsort(text_lengths(texts), kind="stable")


SHUFFLE_BUFFER_ROWS = 10_000  # rows each worker shuffles among, per epoch


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    """One DDP worker. ``cfg`` holds plain values (built in ``distill._fit``)."""
    import ray.train
    import ray.train.torch
    from transformers import get_linear_schedule_with_warmup

    from pipeline import tasks

    torch.manual_seed(cfg["seed"])
    if cfg.get("threads_per_worker"):  # CPU training: the cores this worker computes on (distill.threads_per_worker)
        torch.set_num_threads(cfg["threads_per_worker"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    kind = tasks.get(cfg["task"])
    tokenizer, model = kind.load_student(cfg["student_model"])

    start_epoch, history, state = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resume: weights, optimizer, schedule and the epochs (or part of one) already done
        with checkpoint.as_directory() as folder:
            _, model = kind.load_student(folder)
            # weights_only: the checkpoint may come from a shared bucket, and unpickling it in full
            # would run whatever code a writer of that prefix put there. Optimizer and schedule state
            # are tensors and plain values, which the restricted loader reads.
            state = torch.load(os.path.join(folder, STATE_FILE), weights_only=True)
            with open(os.path.join(folder, HISTORY_FILE)) as f:
                history = json.load(f)
        start_epoch = state["epoch"] + (0 if state.get("batches_done") else 1)
        if rank == 0:
            where = f"batch {state['batches_done']} of epoch {state['epoch']}" if state.get("batches_done") else \
                f"the end of epoch {state['epoch']}"
            print(f"[distill] resuming from the checkpoint at {where}", flush=True)

    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    rows_per_worker = cfg["train_rows"] // world
    steps_per_epoch = max(1, math.ceil(rows_per_worker / cfg["batch_size"] / cfg["gradient_accumulation"]))
    total_steps = steps_per_epoch * cfg["epochs"]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_ratio"] * total_steps), total_steps)
    if state:
        scheduler.load_state_dict(state["scheduler"])
        if "optimizer" in state:  # the last epoch's checkpoint has none (a run given more epochs starts AdamW anew)
            optimizer.load_state_dict(state["optimizer"])
    use_amp = cfg["use_gpu"] and torch.cuda.is_available()
    shard = ray.train.get_dataset_shard("train")
    # The batches are tokenised in a thread of their own (``prefetched``), with a tokenizer of their own: a
    # fast tokenizer sets truncation and padding on its shared Rust object and refuses concurrent use.
    collate_tokenizer = copy.deepcopy(tokenizer)

    every = cfg.get("checkpoint_every_batches") or 0
    for epoch in range(start_epoch, cfg["epochs"]):
        epoch_started = time.perf_counter()
        model.train()
        loss_sum, batches = torch.zeros((), device=device), 0
        skip = 0
        if state and state.get("batches_done") and epoch == state["epoch"]:
            # Resuming inside this epoch: its first batches were trained before the checkpoint. Every
            # worker skips as many (Ray Train splits the data into equal shards), so the schedule and
            # the epoch's mean loss go on where they stopped.
            skip, batches = state["batches_done"], state["batches_done"]
            loss_sum += float(state["loss_sum"])
        # Rows reach a worker in file order: round 0's rows, then each round's additions, written
        # example by example. Unshuffled, SGD sees one source and label at a time (measured: the rounds
        # bench's student stopped learning, loss stuck at ln 3). The buffer is seeded per epoch: a resumed
        # epoch whose shard holds the same rows sees them in the same order, and skips what it trained.
        pools = shard.iter_batches(batch_size=cfg["batch_size"] * BUCKET_BATCHES, batch_format="numpy",
                                   local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS,
                                   local_shuffle_seed=cfg["seed"] + epoch)
        # Batches trained before a checkpoint inside this epoch are passed over before they are tokenised.
        rows_left = itertools.islice(length_bucketed(pools, cfg["batch_size"], cfg["seed"] + epoch), skip, None)
        collated = (kind.collate(collate_tokenizer, rows, cfg["max_length"]) for rows in rows_left)
        for step, batch in enumerate(prefetched(collated), start=skip):
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = kind.loss(model, batch, cfg["mode"])  # the loss itself in float32
            (loss / cfg["gradient_accumulation"]).backward()
            if (step + 1) % cfg["gradient_accumulation"] == 0:
                _optimizer_step(model, optimizer, scheduler)
            loss_sum += loss.detach()
            batches += 1
            _injected_death(cfg.get("faults", {}), rank, epoch, batches)
            if every and batches % every == 0 and batches % cfg["gradient_accumulation"] == 0:
                # A checkpoint inside the epoch (hours long on a large corpus): a lost worker resumes
                # from here. It ranks below every epoch's checkpoint, so only the latest is kept.
                partial = {"epoch": epoch, "batches_done": batches, "partial": True, "run_id": cfg["run_id"],
                           "train_loss": PARTIAL_SCORE[1], "val_macro_f1": PARTIAL_SCORE[0]}
                _report(partial, rank, _unwrap(model), tokenizer, optimizer, scheduler, epoch, history,
                        {"batches_done": batches, "loss_sum": float(loss_sum.item())})
        if batches % cfg["gradient_accumulation"]:
            _optimizer_step(model, optimizer, scheduler)  # the epoch's last, partial accumulation
        mean_loss = _all_reduce_mean(loss_sum / max(batches, 1), world)
        # run_id tells this job's epochs from those restored out of a checkpoint.
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": mean_loss, "run_id": cfg["run_id"],
                                   "epoch_seconds": time.perf_counter() - epoch_started, "resumed_at_batch": skip}
        if rank == 0 and cfg["validation"]:
            texts, targets = cfg["validation"]["texts"], cfg["validation"]["targets"]
            evaluation = kind.evaluate(targets, kind.predict(_unwrap(model), tokenizer, texts, cfg["max_length"]))
            if "accuracy" in evaluation:
                metrics["val_accuracy"] = evaluation["accuracy"]
            metrics["val_macro_f1"] = evaluation["macro_f1"]
        history.append({k: v for k, v in metrics.items()})
        # The optimizer's state (twice the weights, for AdamW) is kept only where training may go on from
        # this checkpoint: after the last epoch there is nothing to resume.
        last = epoch == cfg["epochs"] - 1
        _report(metrics, rank, _unwrap(model), tokenizer, optimizer, scheduler, epoch, history, keep_optimizer=not last)


def _injected_death(faults: dict[str, Any], rank: int, epoch: int, batches: int) -> None:
    from pipeline.faults import first_time

    death = faults.get("train_worker_death")
    if (death and rank == 0 and (death["epoch"], death["batch"]) == (epoch, batches)
            and first_time(death.get("once"))):
        # Ray Train's controller collects the workers' reports (and so registers their checkpoints) when it
        # polls them, every 2 s by default; the process lives on a little first, as one would that dies in
        # the middle of later batches, so that the checkpoint before the death counts.
        time.sleep(float(death.get("after_s", 5.0)))
        os._exit(1)


def _optimizer_step(model: Any, optimizer: Any, scheduler: Any) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _all_reduce_mean(value: torch.Tensor, world: int) -> float:
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value = value / world
    return float(value.item())


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def _report(metrics, rank, model, tokenizer, optimizer, scheduler, epoch, history, within_epoch=None,
            keep_optimizer: bool = True) -> None:
    """Every worker reports; rank 0 attaches the checkpoint (weights are identical under DDP).

    ``within_epoch``: for a checkpoint inside an epoch, the batches done in it and their summed loss.
    ``keep_optimizer`` False: a checkpoint without the optimizer's state (the last epoch's).
    """
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            training = {"scheduler": scheduler.state_dict(),
                        **({"optimizer": optimizer.state_dict()} if keep_optimizer else {})}
            torch.save({"epoch": epoch, **training, **(within_epoch or {})}, os.path.join(folder, STATE_FILE))
            with open(os.path.join(folder, HISTORY_FILE), "w") as f:
                json.dump(history, f)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)
