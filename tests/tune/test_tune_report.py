"""tune's report on synthetic searches: how many alphas it evaluated, and a warning when the chosen alpha is at the
edge of the alphas searched (only then)."""

from __future__ import annotations

from perta_hub.tuning.report import edge_warning, edge_warnings, search_notes, tune_record
from perta_hub.tuning.search import linear_grid, search_alpha


def _record(grid, budget, max_evals):
    """forgetting = alpha, utility = 1 - alpha / 10, searched by :func:`search_alpha`, as tune records it."""
    result = search_alpha(lambda a: (a, 1.0 - a / 10), grid=grid, budget=budget, reference_utility=1.0,
                          max_evals=max_evals)
    signals = {p.alpha: {"forget_nll": p.forgetting, "retain_prob": p.utility} for p in result.points}
    return tune_record(result, signals, {"forget_nll": 0.0, "retain_prob": 1.0}, grid=list(grid), max_evals=max_evals,
                       data={}, seconds=0.1)


def test_an_interior_choice_is_counted_without_warning():
    record = _record(linear_grid(0.5, 8.0, 6), budget=0.75, max_evals=12)  # boundary 2.5, inside the range
    assert 2.0 < record["chosen"] < 3.5
    assert edge_warning(record) is None and edge_warnings([("tv", record)]) == []
    assert search_notes([("tv", record)]) == [
        f"tv: 12 alphas evaluated (6 on the grid, 6 by bisection) from 0.5 to 8; chosen alpha {record['chosen']:g}"]


def test_the_highest_alpha_searched_is_warned():
    record = _record([0.5, 1.0, 1.5], budget=0.5, max_evals=12)  # every alpha keeps the budget
    assert record["chosen"] == 1.5
    assert search_notes([("wm", record)]) == ["wm: 3 alphas evaluated (3 on the grid, 0 by bisection) from 0.5 to "
                                              "1.5; chosen alpha 1.5"]
    (warning,) = edge_warnings([("wm", record)])
    assert warning.startswith("warning: wm: the chosen alpha 1.5 is the highest alpha searched")
    assert "HI > 1.5" in warning


def test_the_lowest_alpha_searched_is_warned():
    record = _record([4.0, 6.0], budget=0.9, max_evals=4)  # both break the budget; bisection from 0 finds 1
    assert record["chosen"] == 1.0 and len(record["points"]) == 4
    (warning,) = edge_warnings([("tv", record)])
    assert "the chosen alpha 1 is the lowest alpha searched" in warning and "LO < 1" in warning
