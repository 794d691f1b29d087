"""The student: a Hugging Face encoder fine-tuned with Ray Train (DDP).

``train_loop_per_worker`` reads like plain PyTorch: model, optimizer and
schedule, then epochs over this worker's shard of the Ray Dataset. Ray Train
wraps the model in DDP, gives each worker its own shard, and keeps the
checkpoints; a job started again with the same run folder resumes from the
latest one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any, Optional, Sequence

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


def tokenizing_collate(model: str, max_length: int, task: Any) -> Any:
    """An ``iter_torch_batches`` collate: training rows -> model inputs and targets, by the task type
    (``task``: its TaskConfig; :meth:`~pipeline.tasks.base.TaskType.collate`).

    Ray Data calls it from its prefetch threads, so tokenising overlaps the
    training step. Each thread has its own tokenizer: a fast tokenizer sets
    its truncation and padding on the shared Rust object and refuses
    concurrent calls ("Already borrowed").
    """
    import threading

    from ray.data.collate_fn import NumpyBatchCollateFn

    from pipeline import tasks

    kind = tasks.get(task)

    class TokenizingCollate(NumpyBatchCollateFn):
        def __init__(self) -> None:
            self._local = threading.local()

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
            tokenizer = getattr(self._local, "tokenizer", None)
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = self._local.tokenizer = AutoTokenizer.from_pretrained(model)
            return kind.collate(tokenizer, batch, max_length)

    return TokenizingCollate()


@torch.no_grad()
def predict_proba(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (rows x classes) for ``texts``."""
    return predict_with_embeddings(model, tokenizer, texts, max_length, batch_size, embeddings=False)[0]


@torch.no_grad()
def predict_with_embeddings(
    model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64, embeddings: bool = True,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Class probabilities and, with ``embeddings``, the encoder's mean-pooled last hidden state per text.

    Probabilities are a softmax over the classes, or for a multi-label model (``problem_type``
    ``multi_label_classification``) one sigmoid per label.
    """
    model.eval()
    device = next(model.parameters()).device
    multi_label = model.config.problem_type == "multi_label_classification"
    probabilities, pooled = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, texts[start:start + batch_size], max_length)
        inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
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
    return np.concatenate(probabilities), (np.concatenate(pooled) if embeddings else None)


SHUFFLE_BUFFER_ROWS = 10_000  # rows each worker shuffles among, per epoch


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    """One DDP worker. ``cfg`` holds plain values (built in ``distill._fit``)."""
    import ray.train
    import ray.train.torch
    from transformers import get_linear_schedule_with_warmup

    from pipeline import tasks

    torch.manual_seed(cfg["seed"])
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
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    use_amp = cfg["use_gpu"] and torch.cuda.is_available()
    shard = ray.train.get_dataset_shard("train")
    collate = tokenizing_collate(cfg["student_model"], cfg["max_length"], cfg["task"])

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
        for step, batch in enumerate(shard.iter_torch_batches(
                batch_size=cfg["batch_size"], device=device, collate_fn=collate,
                local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS, local_shuffle_seed=cfg["seed"] + epoch)):
            if step < skip:
                continue
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
        _report(metrics, rank, _unwrap(model), tokenizer, optimizer, scheduler, epoch, history)


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


def _report(metrics, rank, model, tokenizer, optimizer, scheduler, epoch, history, within_epoch=None) -> None:
    """Every worker reports; rank 0 attaches the checkpoint (weights are identical under DDP).

    ``within_epoch``: for a checkpoint inside an epoch, the batches done in it and their summed loss.
    """
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            torch.save(
                {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 **(within_epoch or {})},
                os.path.join(folder, STATE_FILE),
            )
            with open(os.path.join(folder, HISTORY_FILE), "w") as f:
                json.dump(history, f)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)
