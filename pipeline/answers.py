"""Parse a teacher's free-text answer into one label of the label set.

The parser is deliberately conservative: it returns a label only when the
answer names exactly one label, and ``None`` (an abstention) otherwise. It
can never return a string outside the label set, whatever the text or the
model say, which is what makes prompt injection in a text harmless to the
label column.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

_MARKER = re.compile(r"answer\s*(?:is\s*)?[:：=\-]|answer\s+is\b|final answer\b", re.IGNORECASE)
# Words that, just before a label's name, negate it ("not positive"); read on normalised text.
NEGATION = re.compile(r"\b(?:not|no|neither|nor|isn t|is not)\s*$")


def normalize(text: str) -> str:
    """Lower-case, treat ``_`` and ``-`` as spaces, drop other punctuation, fold spaces."""
    text = text.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def answer_tail(completion: str) -> Optional[str]:
    """Everything after the last ``Answer:`` marker of a completion; None when it has none."""
    markers = list(_MARKER.finditer(completion))
    return completion[markers[-1].end():] if markers else None


def answer_segment(completion: str) -> str:
    """The part of a completion that holds the final answer.

    The text after the last ``Answer:`` marker up to the end of its line; with no
    marker, the last non-empty line (models often end with the bare label).
    """
    tail = answer_tail(completion)
    if tail is not None:
        lines = [line for line in tail.splitlines() if line.strip()]
        return lines[0] if lines else ""
    lines = [line for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_answer(completion: str, label_names: Sequence[str]) -> Optional[str]:
    """Return the one label the answer names, or ``None`` to abstain.

    Matching ignores case, punctuation and surrounding words ("**Answer:** the
    sentiment is Positive." gives ``positive``). A segment naming two labels,
    naming none, or negating the one it names ("not positive") abstains.
    """
    segment = normalize(answer_segment(completion))
    if not segment:
        return None
    by_norm = {normalize(name): name for name in label_names}
    if segment in by_norm:
        return by_norm[segment]
    padded = f" {segment} "
    found = {norm for norm in by_norm if f" {norm} " in padded}
    # "very negative" also contains "negative": keep only the longest names.
    found = {norm for norm in found if not any(norm != other and f" {norm} " in f" {other} " for other in found)}
    if len(found) != 1:
        return None
    (norm,) = found
    before = padded[: padded.index(f" {norm} ")]
    if NEGATION.search(before):
        return None
    return by_norm[norm]
