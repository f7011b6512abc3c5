"""The demo's report: per-model rows, the best settings within the utility budget, results.md and the plot
(shared by the tiny demo and ``demo --model``)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Steps:
    """Runs the demo's named steps, echoing each and keeping its wall time (s) and the process's peak RSS after
    it (GiB) in :attr:`timings` and :attr:`peaks`."""

    echo: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        self.echo(f"== {name}")
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        self.peaks[name] = peak_rss_gib()
        self.echo(f"   {name}: {self.timings[name]:.1f} s (peak RSS so far {self.peaks[name]:.2f} GiB)")
        return result

    def with_total(self) -> dict[str, float]:
        """The step timings and ``total``: seconds since this object was made."""
        return {**self.timings, "total": round(time.perf_counter() - self.start, 1)}


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (GiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _row(result: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    meta = result["meta"]
    method = names.get(str(meta["model"])) or meta.get("method") or Path(meta["model"]).name
    fq = result["forget_quality"]
    return {
        "model": meta["model"], "method": method, "alpha": meta.get("alpha"), "setting": meta.get("setting"),
        "step_norm": meta.get("step_norm"),
        "forget_quality": fq["agg_value"], "log10_forget_quality": fq.get("log10"),
        "model_utility": result["model_utility"]["agg_value"],
        "forget_extraction_strength": result["extraction_strength"]["agg_value"],
        "retain_extraction_strength": result["retain_extraction_strength"]["agg_value"],
        "forget_rouge": result["forget_Q_A_ROUGE"]["agg_value"],
        "retain_rouge": result["retain_Q_A_ROUGE"]["agg_value"],
    }


def summarise(results: list[dict[str, Any]], cfg: Any, names: dict[str, str],
              methods: tuple[str, ...] = ("tv", "perta-grad", "perta-fisher")) -> dict[str, Any]:
    """Rows per model, and per method the best setting by forget quality and at utility >= 0.95 x target's.

    ``names`` maps a model path to its row name (``target``, ``retain``); others are named by method.
    """
    rows = [_row(r, names) for r in results]
    target_mu = next(r["model_utility"] for r in rows if r["method"] == "target")
    best: dict[str, Any] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        by_fq = max(mine, key=lambda r: r["forget_quality"] or 0.0)
        kept = [r for r in mine if r["model_utility"] >= 0.95 * target_mu]
        by_fq_kept = max(kept, key=lambda r: r["forget_quality"] or 0.0) if kept else None
        best[method] = {"best_forget_quality": by_fq,
                        "best_forget_quality_at_utility_95pct": by_fq_kept}
    return {"config": asdict(cfg), "rows": rows, "best": best, "target_model_utility": target_mu}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def results_markdown(summary: dict[str, Any]) -> str:
    """The results table (markdown) and the best alphas."""
    steps = any(r.get("step_norm") is not None for r in summary["rows"])
    head = ("| method | alpha / setting | " + ("step ‖αw⊙τ‖/‖τ‖ | " if steps else "")
            + "forget quality | log10 FQ | model utility | ES forget | ES retain | ROUGE forget | ROUGE retain |\n"
            + "|---" * (10 if steps else 9) + "|\n")
    body = "".join(
        f"| {r['method']} | {_setting(r)} | " + (f"{_fmt(r.get('step_norm'), 2)} | " if steps else "")
        + f"{_fmt(r['forget_quality'])} | {_fmt(r['log10_forget_quality'], 2)} "
        f"| {_fmt(r['model_utility'])} | {_fmt(r['forget_extraction_strength'])} "
        f"| {_fmt(r['retain_extraction_strength'])} | {_fmt(r['forget_rouge'])} | {_fmt(r['retain_rouge'])} |\n"
        for r in summary["rows"])
    lines = ["", f"Target model utility: {_fmt(summary['target_model_utility'])}", ""]
    for method, best in summary["best"].items():
        a = best["best_forget_quality"]
        b = best["best_forget_quality_at_utility_95pct"]
        lines.append(f"- {method}: best forget quality at {_setting(a, True)} (FQ {_fmt(a['forget_quality'])}, "
                     f"MU {_fmt(a['model_utility'])}); at MU >= 0.95 x target: "
                     + (f"{_setting(b, True)} (FQ {_fmt(b['forget_quality'])}, MU {_fmt(b['model_utility'])})"
                        if b else "no setting keeps that much utility"))
    return head + body + "\n".join(lines) + "\n"


def _setting(row: dict[str, Any], named: bool = False) -> str:
    """``alpha`` of a task-arithmetic row, the ``lr=..,ep=..`` setting of a gradient one, else n/a."""
    if row.get("alpha") is not None:
        return f"alpha {_fmt(row['alpha'])}" if named else _fmt(row["alpha"])
    return str(row.get("setting") or "n/a")


def _order(row: dict[str, Any]) -> tuple[float, str]:
    return (row["alpha"] if row.get("alpha") is not None else 0.0, str(row.get("setting") or ""))


def plot_methods(summary: dict[str, Any], path: Path, title: str = "TOFU-mini: forgetting vs utility") -> Path:
    """Forget quality (log) against model utility: one curve per method (ordered by alpha, or by setting for
    the gradient methods), the target as a star, the retain model (the forget-quality reference, so it has
    none) as a vertical line at its utility. Point labels (alpha or setting) are placed so that none overlaps
    another label or a point (:func:`perta_hub.evaluation.plot.place_labels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perta_hub.evaluation.plot import place_labels

    fig, ax = plt.subplots(figsize=(7.2, 5.4), dpi=120)
    floor = 1e-300
    markers = {"tv": "o", "perta-grad": "s", "perta-fisher": "^", "perta-fisher-p2": "<", "ga": "v", "gd": "D",
               "npo": "P"}
    others = sorted({str(r["method"]) for r in summary["rows"]} - set(markers) - {"target", "retain"}
                    - {m for m in (str(r["method"]) for r in summary["rows"]) if m.startswith("tune")})
    markers.update({m: ">hp*d"[i % 5] for i, m in enumerate(others)})  # e.g. the follow-ups' variants
    labels: list[tuple[float, float, str]] = []
    methods = [m for m in markers if any(r["method"] == m for r in summary["rows"])]
    for method in methods:
        mine = sorted((r for r in summary["rows"] if r["method"] == method), key=_order)
        xs = [r["model_utility"] for r in mine]
        ys = [max(r["forget_quality"] or floor, floor) for r in mine]
        ax.plot(xs, ys, marker=markers[method], label=method)
        labels += [(x, y, f"{r['alpha']:g}" if r.get("alpha") is not None
                    else str(r.get("setting") or "").replace("lr=", "").replace(",ep=", "/"))
                   for r, x, y in zip(mine, xs, ys, strict=True)]
    for r in (r for r in summary["rows"] if str(r["method"]).startswith("tune")):  # alphas chosen by tune
        ax.scatter([r["model_utility"]], [max(r["forget_quality"] or floor, floor)], marker="X", s=80, zorder=3,
                   label=f"{r['method']} (chosen alpha {r['alpha']:g})")
    for r in (r for r in summary["rows"] if r["method"] == "target"):
        ax.scatter([r["model_utility"]], [max(r["forget_quality"] or floor, floor)], marker="*", s=110,
                   color="black", label="target", zorder=3)
    if summary.get("target_model_utility"):
        ax.axvline(0.95 * summary["target_model_utility"], color="black", linestyle=":", linewidth=1,
                   label="0.95 x target's utility")
    for r in (r for r in summary["rows"] if r["method"] == "retain"):  # the reference: no forget quality
        ax.axvline(r["model_utility"], color="gray", linestyle="--", linewidth=1, label="retain model's utility")
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value, log)")
    ax.set_title(title + (" (labels: alpha; lr/epochs)" if any(r.get("setting") for r in summary["rows"])
                          else " (labels: alpha)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, labels, fontsize=7)
    fig.savefig(path)
    plt.close(fig)
    return path


