"""The sweep plots: forget quality (log scale) against model utility, one line per method, labels placed apart
(:func:`plot_sweep` from evaluation results, :func:`plot_methods` from a demo's summary rows)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.evaluation.metric_info import REACHED_FQ
from perta_hub.io.atomic import write_atomic


def plot_sweep(results: Sequence[dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG (matplotlib, Agg backend): model utility on x, forget quality on a log y axis; and, when the
    results have PrivLeak, a second panel with PrivLeak (%, linear, 0 marked) against model utility.

    Points are grouped by method (``meta.method``, read from each folder's ``perta_config.json``): one line
    per method, ordered by alpha (or by the ``lr=..,ep=..`` setting of an ``unlearn`` model), the method in
    the legend and the alpha (or setting) beside each point; models without a method (a target, a fine-tuned
    model) are single labelled stars. A retain model evaluated as the reference (no forget quality) is a
    dashed vertical line at its utility when its result is passed. Labels never overlap
    (:func:`place_labels`). Models without a forget quality (PrivLeak, in its panel) are otherwise left out;
    none with a forget quality is an error. The file is written atomically (never half-written).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiny = 1e-300  # a p-value of exactly 0 cannot sit on a log axis
    scored = [r for r in results if r.get("forget_quality", {}).get("agg_value") is not None]
    if not scored:
        raise InputError("the plot needs forget quality: pass --retain-logs FILE or --retain-model M")
    leaky = [r for r in scored if (r.get("privleak") or {}).get("agg_value") is not None]
    fig, axes = plt.subplots(1, 2 if leaky else 1, figsize=(13.0 if leaky else 7.2, 5.4), dpi=120, squeeze=False)
    split = results[0]["meta"].get("forget_split", "")
    panels = [(axes[0][0], scored, lambda r: max(r["forget_quality"]["agg_value"], tiny),
               "forget quality (KS p-value, log scale)",
               title or f"TOFU {split}: forget quality vs model utility (labels: alpha / setting)")]
    if leaky:
        panels.append((axes[0][1], leaky, lambda r: r["privleak"]["agg_value"],
                       "PrivLeak, Min-K% AUC vs retain model's (%; > 0 leaks, < 0 over-unlearned)",
                       f"TOFU {split}: PrivLeak vs model utility"))
    placed = []
    for k, (ax, members, y_of, ylabel, panel_title) in enumerate(panels):
        labels = _sweep_panel(ax, members, results, y_of)
        if k == 0:
            ax.set_yscale("log")
        else:
            ax.axhline(0.0, color="black", linewidth=0.8, label="PrivLeak 0 (as the retain model)")
        xs_all = [x for x, _, _ in labels]
        ax.set_xlim(0.0, max(0.1, 1.15 * max(xs_all)))
        ax.set_xlabel("model utility (harmonic mean of 9)")
        ax.set_ylabel(ylabel, fontsize=8 if k else None)
        ax.set_title(panel_title, fontsize=9 if k else None)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        placed.append((ax, labels))
    out = Path(path).expanduser()
    fig.tight_layout()
    for ax, labels in placed:
        place_labels(ax, labels, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix[1:].lower() or None)  # the format of the file name, as savefig(out)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buf.getvalue())
    return out


def _sweep_panel(ax: Any, scored: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
                 y_of: Any) -> list[tuple[float, float, str]]:
    """One panel of :func:`plot_sweep`: a line per method, stars for models without one, the retain model's
    utility as a dashed line; returns the point labels ``(x, y, text)``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    singles = []
    for r in scored:
        method = r["meta"].get("method")
        (groups.setdefault(str(method), []) if method is not None else singles).append(r)
    labels: list[tuple[float, float, str]] = []
    markers = "osv^DP<>Xh"
    for k, (method, members) in enumerate(sorted(groups.items())):
        members.sort(key=lambda r: (r["meta"].get("alpha") if r["meta"].get("alpha") is not None else 0.0,
                                    str(r["meta"].get("setting") or "")))
        xs = [r["model_utility"]["agg_value"] for r in members]
        ys = [y_of(r) for r in members]
        ax.plot(xs, ys, marker=markers[k % len(markers)], label=method)
        for r, x, y in zip(members, xs, ys, strict=True):
            meta = r["meta"]
            text = f"{meta['alpha']:g}" if meta.get("alpha") is not None else str(meta.get("setting") or "")
            labels.append((x, y, text))
    for r in singles:
        x, y = r["model_utility"]["agg_value"], y_of(r)
        ax.scatter([x], [y], marker="*", s=110, zorder=3)
        labels.append((x, y, str(r["meta"].get("label", r["meta"].get("model")))))
    for r in results:
        if r.get("forget_quality", {}).get("agg_value") is None and r.get("model_utility"):
            ax.axvline(r["model_utility"]["agg_value"], color="gray", linestyle="--", linewidth=1,
                       label=f"reference ({r['meta'].get('label', 'retain')})")
    return labels


def plot_methods(summary: dict[str, Any], path: Path, title: str | None = None) -> Path:
    """Forget quality (log) against model utility: one curve per method (ordered by alpha, or by setting for
    the gradient methods), the target as a star, the retain model (the forget-quality reference, so it has
    none) as a vertical line at its utility, the utility budget as a dotted one and forget quality 0.05 (reaching
    the retain model) as a dashed horizontal line. When the rows have PrivLeak, a second panel shows it (%, linear,
    0 marked) against model utility the same way. Point labels (alpha or setting) are placed so that none overlaps
    another label or a point (:func:`perta_hub.evaluation.plot.place_labels`). ``title``: the first panel's
    (default: ``TOFU <forget split>: forgetting vs utility``). A PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if title is None:
        split = (summary.get("evaluation") or {}).get("forget_split")
        title = f"TOFU{' ' + split if split else ''}: forgetting vs utility"
    floor = 1e-300
    leaky = any(r.get("privleak") is not None for r in summary["rows"] if r["method"] != "retain")
    fig, axes = plt.subplots(1, 2 if leaky else 1, figsize=(13.0 if leaky else 7.2, 5.4), dpi=120, squeeze=False)
    suffix = " (labels: alpha; lr/epochs)" if any(r.get("setting") for r in summary["rows"]) else " (labels: alpha)"
    panels = [(axes[0][0], lambda r: max(r["forget_quality"] or floor, floor), "forget quality (KS p-value, log)",
               title + suffix)]
    if leaky:
        panels.append((axes[0][1], lambda r: r.get("privleak"), "PrivLeak (%; > 0 leaks, < 0 over-unlearned)",
                       "PrivLeak (Min-K% AUC vs the retain model's) vs utility"))
    placed = []
    for k, (ax, y_of, ylabel, panel_title) in enumerate(panels):
        placed.append((ax, _methods_panel(ax, summary, y_of)))
        if k == 0:
            ax.set_yscale("log")
            ax.axhline(REACHED_FQ, color="tab:red", linestyle="--", linewidth=1,
                       label=f"forget quality {REACHED_FQ:g} (reaches the retain model)")
        else:
            ax.axhline(0.0, color="tab:red", linestyle="--", linewidth=1, label="PrivLeak 0 (as the retain model)")
        ax.set_xlabel("model utility")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=9 if k else None)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for ax, labels in placed:
        place_labels(ax, labels, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
    return path


def _methods_panel(ax: Any, summary: dict[str, Any], y_of: Any) -> list[tuple[float, float, str]]:
    """One panel of :func:`plot_methods` (rows whose ``y_of`` is None are left out); returns the point labels."""
    markers = {"tv": "o", "perta-grad": "s", "perta-fisher": "^", "perta-fisher-p2": "<", "ga": "v", "gd": "D",
               "npo": "P"}
    rows = [r for r in summary["rows"] if r["method"] == "retain" or y_of(r) is not None]
    others = sorted({str(r["method"]) for r in rows} - set(markers) - {"target", "retain"}
                    - {m for m in (str(r["method"]) for r in rows) if m.startswith("tune")})
    markers.update({m: ">hp*d"[i % 5] for i, m in enumerate(others)})  # e.g. the follow-ups' variants
    labels: list[tuple[float, float, str]] = []
    methods = [m for m in markers if any(r["method"] == m for r in rows)]
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=_order)
        xs = [r["model_utility"] for r in mine]
        ys = [y_of(r) for r in mine]
        ax.plot(xs, ys, marker=markers[method], label=method)
        labels += [(x, y, f"{r['alpha']:g}" if r.get("alpha") is not None
                    else str(r.get("setting") or "").replace("lr=", "").replace(",ep=", "/"))
                   for r, x, y in zip(mine, xs, ys, strict=True)]
    for r in (r for r in rows if str(r["method"]).startswith("tune")):  # alphas chosen by tune
        ax.scatter([r["model_utility"]], [y_of(r)], marker="X", s=80, zorder=3,
                   label=f"{r['method']} (chosen alpha {r['alpha']:g})")
    for r in (r for r in rows if r["method"] == "target"):
        ax.scatter([r["model_utility"]], [y_of(r)], marker="*", s=110, color="black", label="target", zorder=3)
    budget = summary.get("utility_budget")
    if budget:
        ax.axvline(budget["threshold"], color="black", linestyle=":", linewidth=1,
                   label=f"utility budget ({budget['fraction']:g} x target's)")
    for r in (r for r in rows if r["method"] == "retain"):  # the reference: no forget quality
        ax.axvline(r["model_utility"], color="gray", linestyle="--", linewidth=1, label="retain model's utility")
    return labels


def _order(row: dict[str, Any]) -> tuple[float, str]:
    """A summary row's place on its curve: by alpha, or by the ``lr=..,ep=..`` setting."""
    return (row["alpha"] if row.get("alpha") is not None else 0.0, str(row.get("setting") or ""))


def place_labels(ax: Any, labels: Sequence[tuple[float, float, str]], *, fontsize: float = 7) -> list[Any]:
    """Annotate each ``(x, y, text)`` beside its point so that no label overlaps another label or a point.

    Greedy placement in display space: for each label, candidate offsets around the point (right, left,
    above, below, the diagonals, then twice and three times as far) are tried in turn and the first whose box
    touches no placed label, no point marker and stays inside the axes is taken; when none is free the one
    with the least overlap is taken and joined to its point by a thin line. Call after the data, scales and
    ``tight_layout`` are set (display coordinates must be final). Returns the annotations.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72.0
    pts = [tuple(ax.transData.transform((x, y))) for x, y, _ in labels]
    marker = 4.0 * to_px  # half-size of a point's box
    taken = [(px - marker, py - marker, px + marker, py + marker) for px, py in pts]
    frame = ax.get_window_extent(renderer)
    placed = []
    for (x, y, text), (px, py) in zip(labels, pts, strict=True):
        probe = ax.text(0, 0, text, fontsize=fontsize)
        box = probe.get_window_extent(renderer)
        probe.remove()
        w, h = box.width, box.height
        gap = 3.0 * to_px
        best, best_cost = None, None
        for scale in (1.0, 2.5, 4.5):
            g = gap * scale
            for dx, dy in ((g, g / 2), (g, -h - g / 2), (-w - g, g / 2), (-w - g, -h - g / 2), (-w / 2, g),
                           (-w / 2, -h - g), (g, -h / 2), (-w - g, -h / 2)):
                x0, y0 = px + dx, py + dy
                rect = (x0, y0, x0 + w, y0 + h)
                cost = sum(_overlap(rect, other) for other in taken)
                if x0 < frame.x0 or x0 + w > frame.x1 or y0 < frame.y0 or y0 + h > frame.y1:
                    cost += w * h  # outside the axes: as bad as a full overlap
                if best_cost is None or cost < best_cost:
                    best, best_cost = (dx, dy, rect), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        dx, dy, rect = best
        taken.append(rect)
        arrow = None if best_cost == 0 and abs(dx) < 3 * gap and abs(dy) < h + 3 * gap else \
            {"arrowstyle": "-", "lw": 0.4, "color": "gray"}
        placed.append(ax.annotate(text, (x, y), xytext=(dx / to_px, dy / to_px), textcoords="offset points",
                                  fontsize=fontsize, ha="left", va="bottom", arrowprops=arrow))
    return placed


def labels_overlap(annotations: Sequence[Any]) -> int:
    """How many pairs of the drawn ``annotations`` overlap (0 when :func:`place_labels` succeeded)."""
    if not annotations:
        return 0
    fig = annotations[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in annotations]
    return sum(1 for i, a in enumerate(boxes) for b in boxes[i + 1:]
               if _overlap((a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1)) > 0)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0
