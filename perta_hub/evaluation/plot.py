"""The sweep plot: forget quality (log scale) against model utility, one labelled point per model."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.io.atomic import write_atomic


def plot_sweep(results: Sequence[dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG (matplotlib, Agg backend) with model utility on x and forget quality on a log y axis.

    Each point is labelled with ``meta.label`` (method and alpha from ``perta_config.json``, else the
    folder name). Models without a forget quality are left out; none at all is an error. The file is
    written atomically (never half-written).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["meta"].get("label", r["meta"].get("model")), r["model_utility"]["agg_value"],
               r["forget_quality"]["agg_value"]) for r in results
              if r.get("forget_quality", {}).get("agg_value") is not None]
    if not points:
        raise InputError("the plot needs forget quality: pass --retain-logs FILE or --retain-model M")
    tiny = 1e-300  # a p-value of exactly 0 cannot sit on a log axis
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for label, mu, fq in points:
        ax.scatter([mu], [max(fq, tiny)], s=36)
        ax.annotate(str(label), (mu, max(fq, tiny)), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlim(0.0, max(0.1, 1.1 * max(mu for _, mu, _ in points)))
    ax.set_xlabel("model utility (harmonic mean of 9)")
    ax.set_ylabel("forget quality (KS p-value, log scale)")
    split = results[0]["meta"].get("forget_split", "")
    ax.set_title(title or f"TOFU {split}: forget quality vs model utility")
    ax.grid(True, which="both", alpha=0.3)
    out = Path(path).expanduser()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix[1:].lower() or None)  # the format of the file name, as savefig(out)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buf.getvalue())
    return out
