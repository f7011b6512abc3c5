"""Choosing alpha: a bracketing search for the strongest forgetting within a utility budget (pure, no torch).

The rule: among the alphas evaluated, the one with the **largest forgetting** whose **utility** is at least
``budget x`` the target's (the reference, alpha = 0). The search spends a fixed number of evaluations:

1. a coarse grid (the given alphas, or ``n`` evenly spaced ones in ``[lo, hi]``), in increasing order;
2. bisection on the boundary: between the feasible grid alpha with the largest forgetting and the next grid
   alpha when that one breaks the budget (or between 0 and the first grid alpha when every grid alpha breaks
   it), halving the bracket until the evaluations are spent or it is narrower than ``tol``.

For a utility that falls and a forgetting that rises with alpha (the usual case) this converges to the
largest alpha within the budget. Nothing here knows about models: ``score(alpha)`` does the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from perta_hub.errors import InputError

#: one evaluation: ``alpha -> (forgetting, utility)``, both "higher is more"
ScoreFn = Callable[[float], tuple[float, float]]


@dataclass(frozen=True)
class Point:
    """One evaluated alpha: its scores, whether it keeps the budget, and the search stage that asked for it."""

    alpha: float
    forgetting: float
    utility: float
    feasible: bool
    stage: str  # "grid" | "bisect"


@dataclass(frozen=True)
class SearchResult:
    """Every point evaluated (in order), the chosen one, and what decided it."""

    points: tuple[Point, ...]
    chosen: Point
    budget: float
    reference_utility: float
    threshold: float  # budget * reference_utility
    bracket: tuple[float, float] | None  # the last (feasible, infeasible) bracket, None if never bracketed

    def to_dict(self) -> dict:
        """Plain JSON-able dict (points as dicts)."""
        data = asdict(self)
        data["points"] = [asdict(p) for p in self.points]
        data["chosen"] = asdict(self.chosen)
        data["bracket"] = None if self.bracket is None else list(self.bracket)
        return data


def check_budget(budget: float) -> float:
    """The utility budget must be a number in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise InputError(f"--utility-budget must be in (0, 1] (a fraction of the target's retain utility), "
                         f"got {budget!r}")
    return float(budget)


def linear_grid(lo: float, hi: float, n: int) -> list[float]:
    """``n`` evenly spaced alphas from ``lo`` to ``hi`` inclusive (rounded to 6 decimals)."""
    if not (0 < lo < hi):
        raise InputError(f"--alpha-range needs 0 < LO < HI, got {lo} {hi}")
    if n < 2:
        return [float(hi)]
    return [round(lo + (hi - lo) * i / (n - 1), 6) for i in range(n)]


def search_alpha(score: ScoreFn, *, grid: Sequence[float], budget: float, reference_utility: float,
                 max_evals: int, tol: float = 1e-3) -> SearchResult:
    """Run the coarse grid, then bisect the boundary, within ``max_evals`` calls of ``score``.

    Args:
        score: ``alpha -> (forgetting, utility)``.
        grid: coarse alphas (> 0); only the first ``max_evals`` (sorted) are evaluated.
        budget: keep ``utility >= budget * reference_utility`` (0 < budget <= 1).
        reference_utility: the target's utility (alpha = 0).
        max_evals: total calls of ``score`` (grid plus bisection), >= 1.
        tol: stop bisecting when the bracket is narrower than ``tol`` (alpha units).
    Raises:
        InputError: no evaluated alpha keeps the budget (one line: the smallest alpha and its utility).
    """
    budget = check_budget(budget)
    if max_evals < 1:
        raise InputError(f"--max-evals must be >= 1, got {max_evals}")
    alphas = sorted({float(a) for a in grid})
    if not alphas or alphas[0] <= 0:
        raise InputError(f"alphas to search must be > 0, got {list(grid)}")
    threshold = budget * reference_utility
    points: list[Point] = []

    def run(alpha: float, stage: str) -> Point:
        forgetting, utility = score(alpha)
        point = Point(alpha, float(forgetting), float(utility), bool(utility >= threshold), stage)
        points.append(point)
        return point

    coarse = [run(a, "grid") for a in alphas[:max_evals]]
    feasible = [p for p in coarse if p.feasible]
    if feasible:
        best = max(feasible, key=lambda p: (p.forgetting, -p.alpha))
        after = [p for p in coarse if p.alpha > best.alpha]
        low, high = (best.alpha, after[0].alpha) if after and not after[0].feasible else (None, None)
    else:
        low, high = 0.0, coarse[0].alpha  # alpha 0 (the target) keeps the budget by definition
    bracket = None if low is None else (low, high)
    while low is not None and high is not None and len(points) < max_evals and high - low > tol:
        point = run(round((low + high) / 2, 9), "bisect")
        if point.feasible:
            low = point.alpha
        else:
            high = point.alpha
        bracket = (low, high)
    kept = [p for p in points if p.feasible]
    if not kept:
        first = min(points, key=lambda p: p.alpha)
        ratio = first.utility / reference_utility if reference_utility else float("nan")
        raise InputError(f"no alpha tried keeps utility >= {budget} x the target's (the smallest, {first.alpha:g}, "
                         f"keeps {ratio:.3f} x); lower --utility-budget or search smaller alphas")
    chosen = max(kept, key=lambda p: (p.forgetting, -p.alpha))
    return SearchResult(tuple(points), chosen, budget, float(reference_utility), float(threshold), bracket)
