"""evaluate's printed table (retain ROUGE, the nine utility components) and the plot (lines per method,
labels that never overlap), on synthetic results."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from perta_hub.evaluation.plot import labels_overlap, place_labels, plot_sweep  # noqa: E402
from perta_hub.evaluation.report import UTILITY_COLUMNS, format_table  # noqa: E402


def _result(label, mu, fq, method=None, alpha=None, setting=None):
    parts = {key: round(0.1 + 0.01 * i + mu / 10, 4) for i, (_, key) in enumerate(UTILITY_COLUMNS)}
    meta = {"label": label, "model": f"/m/{label}", "forget_split": "forget01"}
    meta.update({k: v for k, v in (("method", method), ("alpha", alpha), ("setting", setting)) if v is not None})
    return {"meta": meta, "forget_quality": {"agg_value": fq, "log10": None}, "model_utility":
            {"agg_value": mu, "components": parts}, "retain_Q_A_ROUGE": {"agg_value": 0.4321},
            "forget_Q_A_ROUGE": {"agg_value": 0.9}}


def _sweep():
    results = [_result("target", 0.50, 1e-5)]
    for k, method in enumerate(("tv", "grad", "fisher")):
        for a in (1.0, 2.0, 3.0, 4.0):  # nearly the same points for every method: labels would collide
            results.append(_result(f"{method} alpha={a}", 0.50 - 0.02 * a + 0.001 * k, 1e-5 * 10 ** a * (1 + 0.01 * k),
                                   method=method, alpha=a))
    results.append(_result("npo lr=1e-05,ep=10", 0.45, 0.02, method="npo", setting="lr=1e-05,ep=10"))
    return results


def test_table_has_retain_rouge_and_the_nine_utility_components():
    table = format_table(_sweep())
    head, _, utility = table.partition("model utility components:")
    assert "retain ROUGE-L" in head and "0.4321" in head
    for title, _ in UTILITY_COLUMNS:
        assert title in utility
    assert utility.count("\n") >= len(_sweep()) + 2


def test_labels_never_overlap_on_clustered_points():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    points = [(0.5 + 0.002 * i, 0.1 + 0.001 * (i % 3), f"alpha {i}") for i in range(12)]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    fig.tight_layout()
    assert labels_overlap(place_labels(ax, points)) == 0
    plt.close(fig)


def test_plot_groups_points_by_method(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot

    def recording(self, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(args[0]), list(args[1])))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    retain = _result("retain", 0.48, None)
    out = plot_sweep([*_sweep(), retain], tmp_path / "sweep.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = {label: xs for label, xs, _ in drawn}
    assert set(lines) == {"tv", "grad", "fisher", "npo"}
    # one line per method, ordered by alpha (utility falls with alpha here)
    assert lines["tv"] == sorted(lines["tv"], reverse=True) and len(lines["tv"]) == 4


def _summary(privleak: bool) -> dict:
    def row(method, alpha, mu, fq, pl):
        return {"model": f"/m/{method}{alpha}", "method": method, "alpha": alpha, "setting": None, "step_norm": None,
                "forget_quality": fq, "log10_forget_quality": None, "model_utility": mu,
                "forget_extraction_strength": 0.5, "retain_extraction_strength": 0.9, "forget_rouge": 0.6,
                "retain_rouge": 0.8, "privleak": pl if privleak else None, "mia_min_k": 0.7 if privleak else None}

    rows = [row("target", None, 0.5, 1e-4, -61.25), row("retain", None, 0.49, None, None)]
    rows += [row("tv", a, 0.5 - 0.05 * a, 10 ** (a - 4), -60.0 + 15 * a) for a in (1.0, 2.0, 3.0)]
    return {"rows": rows, "best": {}, "target_model_utility": 0.5,
            "utility_budget": {"fraction": 0.95, "threshold": 0.475}}


def test_results_table_and_methods_plot_show_privleak_when_known(tmp_path):
    from perta_hub.evaluation.plot import plot_methods
    from perta_hub.evaluation.report import results_table

    table = results_table(_summary(True))
    assert table.header[-2:] == ("PrivLeak Min-K% (%)", "AUC Min-K%")
    assert table.rows[0][0] == "target" and table.rows[0][-2:] == ("-61.25", "0.7000")
    assert not any("PrivLeak" in h for h in results_table(_summary(False)).header)  # no empty columns

    def width(summary):
        png = plot_methods(summary, tmp_path / "m.png")
        return int.from_bytes(png.read_bytes()[16:20], "big")  # PNG IHDR width

    assert (width(_summary(True)), width(_summary(False))) == (13 * 120, 864)  # a second panel: PrivLeak
