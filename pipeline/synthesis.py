"""Prompts and answer parsing for LLM-written training examples.

Two uses, both from the method's papers:

- seed synthesis, "explain, then generate": the teacher first lists reasons a
  text could carry a label, then writes an example for a sampled reason;
- error extrapolation (S3, Synthesis Step by Step): for a validation example
  the student got wrong, the teacher writes new examples like it that carry
  its gold label;
- PromptMix (EMNLP'23): for a class Ci, another class Cj and a ratio alpha,
  the teacher writes examples that are alpha about Ci and 1 - alpha about Cj,
  hard examples near the boundary (relabelled afterwards by the labelling job).

Every answer goes through :func:`parse_examples`, which returns a
:class:`~pipeline.filters.Candidate` per example with the reason an unusable
answer is dropped (empty, the instruction echoed, another label announced).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import NamedTuple, Sequence

import numpy as np

from pipeline.answers import normalize
from pipeline.config import TaskConfig
from pipeline.filters import Candidate

_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|text\s*\d*\s*:)\s*", re.IGNORECASE)
_LABEL_LINE = re.compile(r"^\s*(?:label|class|category|sentiment|answer)\s*:\s*(.+)$", re.IGNORECASE)


def system_turn(task: TaskConfig) -> dict[str, str]:
    labels = "\n".join(f"- {label.name}: {label.description}" for label in task.labels)
    return {"role": "system", "content": f"{task.instruction.strip()}\n\nLabels:\n{labels}"}


def reasons_messages(task: TaskConfig, label: str, n: int) -> list[dict[str, str]]:
    """Ask for ``n`` distinct reasons a text could carry ``label`` (one per line)."""
    return [
        system_turn(task),
        {"role": "user", "content": (
            f"List {n} different reasons why a text would be labelled '{label}'. "
            "One short reason per line, no numbering, nothing else."
        )},
    ]


def example_messages(task: TaskConfig, label: str, reason: str) -> list[dict[str, str]]:
    """Ask for one new text that carries ``label`` because of ``reason``."""
    return [
        system_turn(task),
        {"role": "user", "content": (
            f"Write one realistic text that should be labelled '{label}' because: {reason}\n"
            "Answer with the text alone on one line, starting with 'Text:'."
        )},
    ]


def extrapolation_messages(task: TaskConfig, text: str, label: str, m: int) -> list[dict[str, str]]:
    """Ask for ``m`` new texts like a misclassified one, all carrying its gold label."""
    return [
        system_turn(task),
        {"role": "user", "content": (
            f"A classifier got this text wrong. Its correct label is '{label}'.\n"
            f"<text>{text}</text>\n"
            f"Write {m} new, different texts of the same kind that should also be labelled '{label}'. "
            "Vary the wording and details; do not copy the text. One text per line, each starting with 'Text:'."
        )},
    ]


class Mix(NamedTuple):
    """One PromptMix request: ``n`` examples, ``alpha`` about ``label`` and the rest about ``partner``."""

    label: str
    partner: str
    alpha: float
    n: int


def mixing_plan(
    label_names: Sequence[str], per_class: int, per_request: int, alpha_min: float, alpha_max: float, seed: int
) -> list[Mix]:
    """PromptMix requests: per class, ``per_class`` examples in requests of at most ``per_request``,
    each with a partner class drawn uniformly from the others and alpha uniform in [alpha_min, alpha_max].

    Seeded: the same plan on every rerun. Needs at least two classes.
    """
    if len(label_names) < 2:
        raise ValueError(f"PromptMix mixes two classes per prompt; the task has {len(label_names)} label(s)")
    rng = np.random.default_rng(seed)
    plan = []
    for i, label in enumerate(label_names):
        others = [name for j, name in enumerate(label_names) if j != i]
        left = per_class
        for _ in range(math.ceil(per_class / per_request)):
            n = min(per_request, left)
            left -= n
            partner = others[int(rng.integers(len(others)))]
            alpha = round(float(rng.uniform(alpha_min, alpha_max)), 2)
            plan.append(Mix(label, partner, alpha, n))
    return plan


def mixing_messages(task: TaskConfig, mix: Mix) -> list[dict[str, str]]:
    """Ask for ``mix.n`` texts mostly about ``mix.label``, partly about ``mix.partner``; labelled ``mix.label``."""
    descriptions = {label.name: label.description for label in task.labels}
    main, other = round(mix.alpha * 100), 100 - round(mix.alpha * 100)
    return [
        system_turn(task),
        {"role": "user", "content": (
            f"Class '{mix.label}': {descriptions[mix.label]}\n"
            f"Class '{mix.partner}': {descriptions[mix.partner]}\n"
            f"Write {mix.n} different texts that are {main}% about class '{mix.label}' and {other}% about "
            f"class '{mix.partner}', so each should still be labelled '{mix.label}'. "
            "One text per line, each starting with 'Text:'."
        )},
    ]


def parse_reasons(completion: str, limit: int) -> list[str]:
    """Distinct non-empty reasons, bullets and numbering removed, at most ``limit``."""
    reasons: list[str] = []
    for line in completion.splitlines():
        reason = _ITEM.sub("", line).strip()
        if reason and normalize(reason) not in {normalize(r) for r in reasons}:
            reasons.append(reason)
    return reasons[:limit]


def parse_examples(
    completion: str, label: str, label_names: Sequence[str], instruction_snippets: Sequence[str] = ()
) -> list[Candidate]:
    """One candidate per example in ``completion``; unusable answers keep their reason.

    An answer that announces a label (``Label: negative``) other than the
    intended one is dropped as a whole: its examples may carry that label.
    """
    announced = {normalize(m.group(1)) for line in completion.splitlines() if (m := _LABEL_LINE.match(line))}
    others = {normalize(name) for name in label_names if name != label}
    if announced & others:
        return [Candidate(None, label, problem="another label announced")]
    texts = []
    for line in completion.splitlines():
        if _LABEL_LINE.match(line):
            continue
        text = _ITEM.sub("", line).strip().strip('"').strip()
        if text:
            texts.append(text)
    if not texts:
        return [Candidate(None, label, problem="empty answer")]
    snippets = [normalize(s) for s in instruction_snippets if normalize(s)]
    return [
        Candidate(None, label, problem="instruction echoed")
        if any(snippet in normalize(text) for snippet in snippets)
        else Candidate(text, label)
        for text in texts
    ]


def prompt_hash(task: TaskConfig) -> str:
    """Fingerprint of the synthesis prompts (stored on every synthetic row, like the labelling prompt's)."""
    templates = [reasons_messages(task, "{label}", 0), example_messages(task, "{label}", "{reason}"),
                 extrapolation_messages(task, "{text}", "{label}", 0),
                 mixing_messages(task, Mix(task.labels[0].name, task.labels[0].name, 0.5, 0))]
    blob = json.dumps(templates, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
