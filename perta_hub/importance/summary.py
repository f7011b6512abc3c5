"""How selective is a weight map? ``w = I_f^p / (I_f^p + lam I_r^p + eps)`` summarised per module type and layer.

A weight map only does something task arithmetic cannot when ``w`` varies: near 1 where forgetting lives,
near 0 where retention does. :func:`summarise_weights` reports, for the whole map, per module type
(``q_proj`` ... ``down_proj``, ``embed_tokens``, norms) and per layer: the mean of ``w``, the shares above 0.5
and below 0.1, a 10-bin histogram of ``w`` over [0, 1], quantiles (on a seeded sample of at most 2,000 values
per tensor), the scale of the importances next to ``eps``, and with a task vector ``||w ⊙ tau|| / ||tau||``:
how far PerTA steps at a given alpha relative to TV (PerTA at alpha a moves as far as TV at ``a`` times it).

``compute-weights`` writes this summary (at the map's own p, lam, eps) into its card and ``perta_config.json``
(``selectivity``); :func:`summarise_folder` recomputes it for a saved map at other p, lam or eps, and with a task
vector gives ``||w ⊙ tau|| / ||tau||`` over every tensor of the task vector as ``apply`` sums it (the kernel's
:func:`~perta_hub.merge.math.step_sums`, the rest rule of a ``--params`` map included): what ``compute-weights
--task-vector`` prints and ``apply --step`` divides by.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perta_hub.merge.kernel import StepNorm

BINS = 10
SAMPLE_PER_TENSOR = 2000


def module_of(name: str) -> tuple[str, str]:
    """``(module type, layer)`` of a tensor name: ``model.layers.3.mlp.up_proj.weight`` -> ``("up_proj", "3")``;
    a tensor outside the layers has layer ``"-"`` (``model.embed_tokens.weight`` -> ``("embed_tokens", "-")``)."""
    layer = re.search(r"layers\.(\d+)\.", name)
    kind = name.removesuffix(".weight").removesuffix(".bias").split(".")[-1]
    return kind, (layer.group(1) if layer else "-")


def summarise_weights(names: Iterable[str], forget: Callable[[str], Any], retain: Callable[[str], Any], *,
                      p: float, lam: float, eps: float, task_vector: Callable[[str], Any] | None = None,
                      per_layer: bool = True, step: StepNorm | None = None) -> dict[str, Any]:
    """The selectivity summary of the map whose importances ``forget(name)`` / ``retain(name)`` return.

    Args:
        names: tensor names; ``forget``, ``retain`` (and ``task_vector``) return the tensor of a name, any
            float dtype, any shape (read one at a time: memory is one tensor's fp32 copies).
        p, lam, eps: the combination.
        per_layer: also the ``layer:<n>`` rows (the whole map and the module types always).
        step: with ``task_vector``, each tensor's ``(||w ⊙ tau||^2, ||tau||^2)`` is also added to it.
    Returns:
        ``{"p", "lam", "eps", "w_quantiles_10_50_90", "I_forget_median", "I_retain_median",
        "eps_over_median_If_p", "groups": {"all" | "module:<type>" | "layer:<n>": {"mean_w",
        "share_above_0.5", "share_below_0.1", "histogram" (counts of w in 10 bins of [0, 1]), "parameters",
        "norm_w_tau_over_norm_tau" (with a task vector)}}}``.
    """
    import torch

    from perta_hub.merge.math import combine_weights, step_sums

    stats: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    samples: dict[str, list[Any]] = {"w": [], "f": [], "r": []}
    gen = torch.Generator().manual_seed(0)
    for name in names:
        f, r = forget(name).float().flatten(), retain(name).float().flatten()
        w = combine_weights(f, r, p, lam, eps)
        kind, layer = module_of(name)
        histogram = torch.histc(w, bins=BINS, min=0.0, max=1.0)
        norms = step_sums(task_vector(name), (f, r, p, lam, eps)) if task_vector is not None else None
        if norms is not None and step is not None:
            step.add(name, norms)
        for key in ("all", f"module:{kind}", f"layer:{layer}")[:3 if per_layer else 2]:
            s = stats[key]
            s["n"] += w.numel()
            s["sum_w"] += float(w.sum(dtype=torch.float64))
            s["above_0.5"] += int((w > 0.5).sum())
            s["below_0.1"] += int((w < 0.1).sum())
            s["histogram"] = histogram + s["histogram"] if isinstance(s["histogram"], torch.Tensor) else histogram
            if norms is not None:
                s["wtau_sq"] += norms[0]
                s["tau_sq"] += norms[1]
        idx = torch.randint(0, w.numel(), (min(w.numel(), SAMPLE_PER_TENSOR),), generator=gen)
        for key, values in (("w", w), ("f", f), ("r", r)):
            samples[key].append(values[idx])
    if not stats:
        raise ValueError("the weight map has no tensors to summarise")
    sw, sf, sr = (torch.cat(samples[k]) for k in ("w", "f", "r"))
    median_f = float(sf.median())
    out: dict[str, Any] = {
        "p": p, "lam": lam, "eps": eps,
        "w_quantiles_10_50_90": [round(float(v), 4) for v in torch.quantile(sw, torch.tensor([0.1, 0.5, 0.9]))],
        "I_forget_median": median_f, "I_retain_median": float(sr.median()),
        "eps_over_median_If_p": eps / max(median_f ** p, 1e-45),
        "groups": {},
    }
    for key in sorted(stats, key=_group_order):
        s = stats[key]
        row: dict[str, Any] = {"mean_w": round(s["sum_w"] / s["n"], 4),
                               "share_above_0.5": round(s["above_0.5"] / s["n"], 4),
                               "share_below_0.1": round(s["below_0.1"] / s["n"], 4),
                               "histogram": [int(c) for c in s["histogram"].tolist()],
                               "parameters": int(s["n"])}
        if s["tau_sq"] > 0:
            row["norm_w_tau_over_norm_tau"] = round((s["wtau_sq"] / s["tau_sq"]) ** 0.5, 4)
        out["groups"][key] = row
    return out


def _group_order(key: str) -> tuple[int, int, str]:
    kind, _, rest = key.partition(":")
    rank = {"all": 0, "module": 1, "layer": 2}[kind]
    return rank, int(rest) if rest.isdigit() else -1, rest


def summarise_folder(weight_map: str | Path, task_vector: str | Path | None = None, *, p: float | None = None,
                     lam: float | None = None, eps: float | None = None) -> dict[str, Any]:
    """:func:`summarise_weights` of a saved weight map (folder or Hub id) at its own or the given p, lam, eps.

    With ``task_vector`` (folder or Hub id; dense or low-rank) each group also gets ``||w ⊙ tau|| / ||tau||`` over
    its tensors, and the summary gets ``norm_w_tau_over_norm_tau``: the same ratio over **every** tensor of the task
    vector, as ``apply`` sums it (the tensors a ``--params`` map leaves out with ``w = 0`` or ``w = 1``, its
    ``unrestricted`` rule): ``apply --alpha A`` then steps ``A`` times it, and ``apply --step S`` uses ``alpha = S /``
    it.
    """
    from perta_hub.io.artifacts import load_artifact
    from perta_hub.merge.kernel import StepNorm
    from perta_hub.merge.low_rank import open_task_vector
    from perta_hub.merge.math import step_sums

    wmap = load_artifact(weight_map, "weight_map")
    record = wmap.record
    p = record.p if p is None else p
    lam = record.lam if lam is None else lam
    eps = record.eps if eps is None else eps
    forget, retain = wmap.group("importance_forget"), wmap.group("importance_retain")
    tau = None
    if task_vector is not None:
        # dense: the task vector's own tensors; low-rank: formed for the map's tensors and every adapted one
        tau = open_task_vector(load_artifact(task_vector, "task_vector"), {n: forget.shape(n) for n in forget.names})
    names = [n for n in forget.names if tau is None or n in tau.names]
    step = StepNorm() if tau is not None else None
    out = {"weight_map": str(weight_map), "method": record.method, **summarise_weights(
        names, forget.get, retain.get, p=p, lam=lam, eps=eps, task_vector=tau.get if tau is not None else None,
        step=step)}
    if tau is not None and step is not None:
        rest_unchanged = record.get("unrestricted") == "w=0"
        for name in tau.names:
            if name not in step.names:
                tau_sq = step_sums(tau.get(name), None)[1]
                step.add(name, (0.0 if rest_unchanged else tau_sq, tau_sq))
        out["norm_w_tau_over_norm_tau"] = round(step.ratio, 4)
        out["task_vector"] = str(task_vector)
    return out


def summary_of_groups(groups: Mapping[str, Mapping[str, Any]], *, p: float, lam: float, eps: float
                      ) -> dict[str, Any]:
    """The summary of in-memory importances (``compute-weights`` before writing), without the layer rows (the
    card and the record keep the whole map and the module types)."""
    forget, retain = groups["importance_forget"], groups["importance_retain"]
    return summarise_weights(list(forget), forget.__getitem__, retain.__getitem__, p=p, lam=lam, eps=eps,
                             per_layer=False)


def _bar(counts: list[int]) -> str:
    """A histogram as eight-level block characters (one per bin of w, 0 to 1)."""
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(blocks[round(8 * c / top)] for c in counts)


def selectivity_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a markdown table (one row per group) with a histogram bar of ``w`` per row."""
    q = summary["w_quantiles_10_50_90"]
    lines = [
        f"w = I_f^p / (I_f^p + lam I_r^p + eps) at p = {summary['p']:g}, lam = {summary['lam']:g}, "
        f"eps = {summary['eps']:g}: quantiles 10/50/90 % of w = {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}; median "
        f"I_f = {summary['I_forget_median']:.3g}, median I_r = {summary['I_retain_median']:.3g}, eps / median(I_f)^p "
        f"= {summary['eps_over_median_If_p']:.3g}. A map is selective when many weights lie near 0 or 1; a map "
        "whose w centres on one value acts like task arithmetic with a smaller alpha.",
        "",
        "| group | mean w | share w > 0.5 | share w < 0.1 | histogram of w (0 to 1) | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in summary["groups"].items():
        norm = f" (‖w⊙τ‖/‖τ‖ {row['norm_w_tau_over_norm_tau']:.3f})" if "norm_w_tau_over_norm_tau" in row else ""
        lines.append(f"| {key}{norm} | {row['mean_w']:.3f} | {row['share_above_0.5']:.3f} | "
                     f"{row['share_below_0.1']:.3f} | `{_bar(row['histogram'])}` | {row['parameters']:,} |")
    return "\n".join(lines) + "\n"
