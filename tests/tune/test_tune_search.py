"""The alpha search on synthetic scores: the boundary of a monotone utility, the bracket, the budget."""

from __future__ import annotations

import pytest

from perta_hub.errors import InputError
from perta_hub.tuning.search import linear_grid, search_alpha


def monotone(calls: list[float]):
    """forgetting = alpha, utility = 1 - alpha / 10 (falls with alpha)."""
    def score(alpha: float) -> tuple[float, float]:
        calls.append(alpha)
        return alpha, 1.0 - alpha / 10
    return score


def test_monotone_score_converges_to_the_boundary_within_the_budget():
    calls: list[float] = []
    grid = linear_grid(0.5, 8.0, 6)
    assert grid == [0.5, 2.0, 3.5, 5.0, 6.5, 8.0]
    result = search_alpha(monotone(calls), grid=grid, budget=0.75, reference_utility=1.0, max_evals=12)
    boundary = 2.5  # 1 - a/10 >= 0.75  <=>  a <= 2.5
    assert len(calls) == len(result.points) == 12
    assert calls[:6] == grid and all(p.stage == "bisect" for p in result.points[6:])
    assert all(2.0 <= a <= 3.5 for a in calls[6:])  # bisection stays in the first bracket
    assert boundary - 1.5 / 2 ** 6 <= result.chosen.alpha <= boundary
    assert result.chosen.feasible and result.threshold == 0.75
    lo, hi = result.bracket
    assert lo == result.chosen.alpha and lo <= boundary < hi and hi - lo <= 1.5 / 2 ** 6
    assert [p.feasible for p in result.points] == [1 - p.alpha / 10 >= 0.75 for p in result.points]


def test_every_grid_alpha_over_budget_bisects_from_the_target():
    result = search_alpha(monotone([]), grid=[4.0, 6.0], budget=0.9, reference_utility=1.0, max_evals=8)
    assert result.points[2].alpha == 2.0 and result.points[2].stage == "bisect"
    assert 1.0 - 4 / 64 <= result.chosen.alpha <= 1.0  # boundary 1.0, bracket (0, 4) halved 6 times


def test_all_within_budget_takes_the_largest_forgetting_without_bisection():
    result = search_alpha(monotone([]), grid=[0.5, 1.0, 1.5], budget=0.5, reference_utility=1.0, max_evals=12)
    assert len(result.points) == 3 and result.chosen.alpha == 1.5 and result.bracket is None


def test_max_evals_caps_the_grid_and_the_bisection():
    calls: list[float] = []
    result = search_alpha(monotone(calls), grid=linear_grid(0.5, 8.0, 6), budget=0.75, reference_utility=1.0,
                          max_evals=3)
    assert calls == [0.5, 2.0, 3.5] and result.chosen.alpha == 2.0


def test_non_monotone_forgetting_picks_the_largest_forgetting_kept():
    table = {1.0: (3.0, 0.99), 2.0: (5.0, 0.97), 3.0: (4.0, 0.96), 4.0: (9.0, 0.5)}
    result = search_alpha(lambda a: table.get(a, (4.5, 0.96)), grid=list(table), budget=0.95,
                          reference_utility=1.0, max_evals=4)
    assert result.chosen.alpha == 2.0


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), True])
def test_budget_outside_0_1_is_refused(budget):
    with pytest.raises(InputError, match=r"--utility-budget must be in \(0, 1\]"):
        search_alpha(monotone([]), grid=[1.0], budget=budget, reference_utility=1.0, max_evals=4)


def test_nothing_within_budget_is_one_line():
    with pytest.raises(InputError, match="no alpha tried keeps utility >= 0.99"):
        search_alpha(lambda a: (a, 0.1), grid=[1.0, 2.0], budget=0.99, reference_utility=1.0, max_evals=4)
