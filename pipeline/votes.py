"""Self-consistency: aggregate k sampled answers into labels.

For votes ``v_1..v_k`` over labels ``L`` (abstentions excluded), with
``c_l = #{i : v_i = l}`` and ``n = sum_l c_l`` valid votes:

- soft label   ``p_l = c_l / n``                (vote fractions, in label order)
- hard label   ``argmax_l c_l``                 (ties go to the label listed first
  in the config, so the result never depends on sampling order)
- consistency  ``max_l c_l / n``                (share of the majority)

With no valid vote the row is an abstention: no hard or soft label, and
consistency 0.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from pipeline.config import ABSTAIN


@dataclasses.dataclass(frozen=True)
class VoteResult:
    hard_label: Optional[str]
    soft_label: Optional[list[float]]
    consistency: float
    n_valid: int


def aggregate_votes(votes: Sequence[str], label_names: Sequence[str]) -> VoteResult:
    """Majority label, vote fractions and consistency of one text's votes.

    ``votes`` holds label names or :data:`ABSTAIN`; any other string is an
    error, since the parser can only produce those.
    """
    counts = dict.fromkeys(label_names, 0)
    for vote in votes:
        if vote == ABSTAIN:
            continue
        if vote not in counts:
            raise ValueError(f"vote {vote!r} is not a label of {list(label_names)}")
        counts[vote] += 1
    n_valid = sum(counts.values())
    if n_valid == 0:
        return VoteResult(hard_label=None, soft_label=None, consistency=0.0, n_valid=0)
    top = max(counts.values())
    hard = next(name for name in label_names if counts[name] == top)
    soft = [counts[name] / n_valid for name in label_names]
    return VoteResult(hard_label=hard, soft_label=soft, consistency=top / n_valid, n_valid=n_valid)
