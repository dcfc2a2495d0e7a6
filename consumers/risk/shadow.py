"""What a shadow model is judged by: agreement with the active model, and drift of its scores (PSI).

Pure counting, no I/O: the risk service is to keep one `ShadowTally` per (active, candidate) pair and
export it as metrics (docs/risk.md, "Shipping safely").

PSI, the population stability index, compares two score distributions over the same bins:
sum over bins of (actual - expected) * ln(actual / expected), with shares, not counts. The usual
reading: below 0.1 no real shift, 0.1 to 0.25 a moderate one, above 0.25 a large one. An empty bin is
given half a payment, so one empty bin does not make the index infinite.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from consumers.risk.scoring import BP_MAX

# Score bins in basis points. Fraud scores crowd near 0, so the bins are fine there and coarse above.
SCORE_EDGES_BP: Final = (10, 25, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400)


def bin_of(score_bp: int, edges: Sequence[int] = SCORE_EDGES_BP) -> int:
    """The bin of a score: 0 below the first edge, len(edges) at or above the last."""
    if not 0 <= score_bp <= BP_MAX:
        raise ValueError(f"score {score_bp} bp is outside 0..{BP_MAX}")
    return bisect.bisect_right(edges, score_bp)


def psi(expected: Sequence[int], actual: Sequence[int]) -> float:
    """The population stability index of `actual` bin counts against `expected` ones."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} bins against {len(actual)}")
    total_e, total_a = sum(expected), sum(actual)
    if total_e == 0 or total_a == 0:
        return 0.0
    index = 0.0
    for e, a in zip(expected, actual, strict=True):
        share_e, share_a = max(e, 0.5) / total_e, max(a, 0.5) / total_a
        index += (share_a - share_e) * math.log(share_a / share_e)
    return index


@dataclass
class ShadowTally:
    """Decisions and score bins of the active model and a candidate on the same payments."""

    edges: tuple[int, ...] = SCORE_EDGES_BP
    active_bins: list[int] = field(default_factory=list)
    candidate_bins: list[int] = field(default_factory=list)
    pairs: dict[tuple[bool, bool], int] = field(default_factory=dict)  # (active declines, candidate declines)

    def __post_init__(self) -> None:
        self.active_bins = self.active_bins or [0] * (len(self.edges) + 1)
        self.candidate_bins = self.candidate_bins or [0] * (len(self.edges) + 1)

    def add(self, *, active_bp: int, active_declines: bool, candidate_bp: int, candidate_declines: bool) -> None:
        self.active_bins[bin_of(active_bp, self.edges)] += 1
        self.candidate_bins[bin_of(candidate_bp, self.edges)] += 1
        key = (active_declines, candidate_declines)
        self.pairs[key] = self.pairs.get(key, 0) + 1

    @property
    def payments(self) -> int:
        return sum(self.pairs.values())

    @property
    def agreement(self) -> float:
        """The share of payments both models decided alike (1.0 before any payment)."""
        same = self.pairs.get((True, True), 0) + self.pairs.get((False, False), 0)
        return same / self.payments if self.payments else 1.0

    @property
    def drift(self) -> float:
        """PSI of the candidate's scores against the active model's, on the same payments."""
        return psi(self.active_bins, self.candidate_bins)
