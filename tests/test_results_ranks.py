"""Shared ranks (ardbench.results.ranks) and how a table shows them: rows whose seed noise
cannot separate them share a rank; a table without a measured spread lists, never ranks."""

from __future__ import annotations

import math

import pytest

from ardbench.results.ranks import Z95, RankInput, pooled_std, rank_rows


def test_pooled_std_weights_each_row_by_its_degrees_of_freedom():
    rows = [RankInput(0.5, 0.01, 3), RankInput(0.4, 0.02, 2), RankInput(0.3, None, 1)]
    s, k = pooled_std(rows)
    assert k == 2
    assert s == pytest.approx(math.sqrt((2 * 0.01**2 + 1 * 0.02**2) / 3))


def test_rows_within_noise_share_a_rank_and_rows_apart_do_not():
    # pooled std 0.01 (one fraction point); one-seed half-width 1.96 points
    rows = [
        RankInput(0.400, 0.01, 3),  # ± 1.13 points
        RankInput(0.395, None, 1),  # ± 1.96: overlaps the first
        RankInput(0.380, 0.01, 3),  # [36.87, 39.13] vs the first's [38.87, 41.13]: overlap
        RankInput(0.300, None, 1),  # far below all three
    ]
    ranking = rank_rows(rows)
    assert ranking.pooled_std == pytest.approx(0.01)
    assert ranking.ranks == (1, 1, 1, 4)
    assert ranking.half_widths[1] == pytest.approx(Z95 * 0.01)
    assert ranking.half_widths[0] == pytest.approx(Z95 * 0.01 / math.sqrt(3))


def test_a_row_with_a_small_own_std_still_gets_the_pooled_spread():
    # three seeds that agree by chance do not make a row's mean more certain than the track
    lucky = RankInput(0.41, 0.0001, 3)
    rows = [lucky, RankInput(0.40, 0.02, 3)]
    ranking = rank_rows(rows)
    assert ranking.half_widths[0] == pytest.approx(Z95 * ranking.pooled_std / math.sqrt(3))
    assert ranking.ranks == (1, 1)


def test_without_a_multi_seed_row_nothing_is_ranked():
    ranking = rank_rows([RankInput(0.5, None, 1), RankInput(0.1, None, 1)])
    assert ranking.ranks == (None, None) and ranking.pooled_std is None


def test_a_failed_row_never_ranks_and_does_not_push_others_down():
    rows = [RankInput(0.9, None, 1, ranks=False), RankInput(0.4, 0.01, 2), RankInput(0.2, 0.01, 2)]
    assert rank_rows(rows).ranks == (None, 1, 2)
