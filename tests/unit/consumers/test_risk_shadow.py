from __future__ import annotations

import math
import random

import pytest

from consumers.risk.shadow import SCORE_EDGES_BP, ShadowTally, bin_of, psi


def test_bins_split_at_their_edges() -> None:
    assert bin_of(0) == 0 and bin_of(9) == 0 and bin_of(10) == 1
    assert bin_of(6_399) == len(SCORE_EDGES_BP) - 1 and bin_of(10_000) == len(SCORE_EDGES_BP)
    with pytest.raises(ValueError, match="outside"):
        bin_of(10_001)


def test_psi_is_zero_for_the_same_shares_and_matches_a_hand_computation() -> None:
    assert psi([10, 20, 70], [1, 2, 7]) == pytest.approx(0.0)
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert psi([25, 75], [50, 50]) == pytest.approx(expected)
    assert psi([25, 75], [50, 50]) == pytest.approx(psi([50, 50], [25, 75]))


def test_an_empty_bin_gives_a_large_but_finite_index() -> None:
    shifted = psi([100, 0], [0, 100])
    assert math.isfinite(shifted) and shifted > 0.25


def test_psi_refuses_bins_that_do_not_line_up_and_is_zero_with_nothing_counted() -> None:
    with pytest.raises(ValueError, match="bins"):
        psi([1, 2], [1, 2, 3])
    assert psi([0, 0], [0, 0]) == 0.0


def test_a_tally_counts_agreement_and_sees_a_candidate_that_scores_everything_higher() -> None:
    rng = random.Random(4)
    same, higher = ShadowTally(), ShadowTally()
    for _ in range(5_000):
        score = min(10_000, int(rng.expovariate(1 / 150)))
        same.add(active_bp=score, active_declines=score >= 3_200, candidate_bp=score,
                 candidate_declines=score >= 3_200)
        doubled = min(10_000, score * 4)
        higher.add(active_bp=score, active_declines=score >= 3_200, candidate_bp=doubled,
                   candidate_declines=doubled >= 3_200)
    assert same.payments == 5_000 and same.agreement == 1.0 and same.drift == pytest.approx(0.0)
    assert higher.agreement < 1.0 and higher.drift > 0.25
    assert ShadowTally().agreement == 1.0 and ShadowTally().drift == 0.0
