"""The tune search as a record (``perta_config.json``'s ``tune``), a table and a plot (``tune.png``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from perta_hub.io.atomic import write_atomic
from perta_hub.tuning.search import SearchResult

PLOT_NAME = "tune.png"
RULE = ("the largest forgetting (forget-answer NLL, nats/token) whose retain utility (mean retain-answer "
        "probability) is >= budget x the target's")


def tune_record(result: SearchResult, signals: dict[float, dict[str, float]], reference: dict[str, float], *,
                grid: list[float], max_evals: int, data: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The ``tune`` field: rule, budget, reference (alpha 0), every alpha tried with its signals, chosen alpha."""
    ref_utility = result.reference_utility
    points = [{"alpha": p.alpha, "stage": p.stage, **signals[p.alpha],
               "utility_ratio": p.utility / ref_utility if ref_utility else None, "feasible": p.feasible}
              for p in result.points]
    return {"rule": RULE, "objective": "forget_nll", "utility": "retain_prob", "budget": result.budget,
            "threshold": result.threshold, "reference": reference, "grid": grid, "max_evals": max_evals,
            "bracket": None if result.bracket is None else list(result.bracket), "points": points,
            "chosen": result.chosen.alpha, "data": data, "search_seconds": round(seconds, 3), "plot": PLOT_NAME}


def searched(tune: dict[str, Any]) -> tuple[int, float, float]:
    """How many alphas the search evaluated, and the lowest and highest of them."""
    alphas = [p["alpha"] for p in tune["points"]]
    return len(alphas), min(alphas), max(alphas)


def edge_warning(tune: dict[str, Any]) -> str | None:
    """A warning when the chosen alpha is the lowest or the highest alpha evaluated (the search's edge), else None."""
    _, lo, hi = searched(tune)
    chosen = tune["chosen"]
    if chosen == hi:
        return (f"the chosen alpha {chosen:g} is the highest alpha searched: a larger one may forget more within the "
                f"budget; search higher (--alpha-range LO HI with HI > {chosen:g})")
    if chosen == lo:
        return (f"the chosen alpha {chosen:g} is the lowest alpha searched: every larger one broke the budget or "
                f"forgot less; search lower (--alpha-range LO HI with LO < {chosen:g}) or relax --utility-budget")
    return None


def search_notes(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Per candidate (label, tune record): how many alphas were evaluated, over which span, and the choice."""
    lines = []
    for label, tune in runs:
        count, lo, hi = searched(tune)
        grid = sum(p["stage"] == "grid" for p in tune["points"])
        lines.append(f"{label}: {count} alphas evaluated ({grid} on the grid, {count - grid} by bisection) from "
                     f"{lo:g} to {hi:g}; chosen alpha {tune['chosen']:g}")
    return lines


def edge_warnings(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """``warning: <label>: ...`` for each candidate whose chosen alpha is at the edge (:func:`edge_warning`)."""
    return [f"warning: {label}: {warning}" for label, tune in runs if (warning := edge_warning(tune))]


def search_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """One markdown table for every candidate (label, tune record): each alpha tried, its signals, the choice."""
    lines = ["| weights | alpha | stage | forget NLL | forget prob | retain prob | utility / target | kept | chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, tune in runs:
        ref = tune["reference"]
        lines.append(f"| {label} | 0 (target) | reference | {ref['forget_nll']:.4g} | {ref['forget_prob']:.4g} | "
                     f"{ref['retain_prob']:.4g} | 1 | yes | |")
        for p in sorted(tune["points"], key=lambda p: p["alpha"]):
            lines.append(f"| {label} | {p['alpha']:g} | {p['stage']} | {p['forget_nll']:.4g} | {p['forget_prob']:.4g} | "
                         f"{p['retain_prob']:.4g} | {p['utility_ratio']:.3f} | {'yes' if p['feasible'] else 'no'} | "
                         f"{'**chosen**' if p['alpha'] == tune['chosen'] else ''} |")
    return "\n".join(lines)


def plot_search(tune: dict[str, Any], path: Path, title: str) -> Path:
    """PNG: utility / target's (left axis, with the budget line) and forget NLL (right axis) against alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(tune["points"], key=lambda p: p["alpha"])
    ref = tune["reference"]
    alphas = [0.0] + [p["alpha"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(alphas, [1.0] + [p["utility_ratio"] for p in points], "o-", color="tab:blue", ms=4,
            label="retain utility / target's")
    ax.axhline(tune["budget"], color="tab:blue", ls=":", lw=1, label=f"budget {tune['budget']:g}")
    ax.axvline(tune["chosen"], color="tab:green", ls="--", lw=1, label=f"chosen alpha {tune['chosen']:g}")
    ax.set_xlabel("alpha")
    ax.set_ylabel("retain utility / target's")
    right = ax.twinx()
    right.plot(alphas, [ref["forget_nll"]] + [p["forget_nll"] for p in points], "s-", color="tab:red", ms=3,
               label="forget NLL")
    right.set_ylabel("forget-answer NLL (nats/token)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return path
