"""How selective is a weight map? ``w = I_f^p / (I_f^p + lam I_r^p + eps)`` summarised per module and layer.

    python benchmarks/weight_map_summary.py WEIGHT_MAP [--task-vector TV] [--p P --lam L --eps E] [--json OUT]

Prints, for the whole map and per module type (q/k/v/o_proj, gate/up/down_proj, embed, norms) and per layer:
the mean of ``w``, the share of weights above 0.5 and below 0.1, quantiles; the scale of the importances
(median I_f, I_r) next to ``eps``; with ``--task-vector`` also ``||w ⊙ tau|| / ||tau||`` (how far PerTA steps at
a given alpha relative to TV: the alpha that matches TV's step). Without --p/--lam/--eps the map's own values.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import torch

from perta_hub.io.reader import open_checkpoint
from perta_hub.merge.math import combine_weights


def module_of(name: str) -> tuple[str, str]:
    """(module type, layer) of a tensor name such as ``model.layers.3.mlp.up_proj.weight``."""
    layer = re.search(r"layers\.(\d+)\.", name)
    kind = re.sub(r"^.*layers\.\d+\.", "", name).removesuffix(".weight").split(".")[-1]
    return (kind if layer else name.removesuffix(".weight").split(".")[-1]), (layer.group(1) if layer else "-")


def summarise(folder: Path, tv: Path | None, p: float | None, lam: float | None, eps: float | None) -> dict:
    record = json.loads((folder / "perta_config.json").read_text())
    p, lam, eps = (record["p"] if p is None else p), (record["lam"] if lam is None else lam), \
        (record["eps"] if eps is None else eps)
    forget, retain = open_checkpoint(folder, prefix="importance_forget"), open_checkpoint(folder, prefix="importance_retain")
    tau = open_checkpoint(tv, prefix="task_vector") if tv else None
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    samples_w, samples_f, samples_r = [], [], []
    gen = torch.Generator().manual_seed(0)
    for name in forget.names:
        f, r = forget.get(name).float(), retain.get(name).float()
        w = combine_weights(f, r, p, lam, eps).flatten()
        kind, layer = module_of(name)
        for key in ("all", f"module:{kind}", f"layer:{layer}"):
            s = stats[key]
            s["n"] += w.numel()
            s["sum_w"] += float(w.sum())
            s["above_0.5"] += float((w > 0.5).sum())
            s["below_0.1"] += float((w < 0.1).sum())
            if tau is not None and name in tau.names:
                t = tau.get(name).float().flatten()
                s["tau_sq"] += float((t * t).sum())
                s["wtau_sq"] += float(((w * t) ** 2).sum())
        idx = torch.randint(0, w.numel(), (min(w.numel(), 2000),), generator=gen)
        samples_w.append(w[idx])
        samples_f.append(f.flatten()[idx])
        samples_r.append(r.flatten()[idx])
    out = {"weight_map": str(folder), "method": record.get("method"), "p": p, "lam": lam, "eps": eps}
    sw, sf, sr = torch.cat(samples_w), torch.cat(samples_f), torch.cat(samples_r)
    q = torch.tensor([0.1, 0.5, 0.9])
    out["w_quantiles_10_50_90"] = [round(float(v), 4) for v in torch.quantile(sw, q)]
    out["I_forget_median"], out["I_retain_median"] = float(sf.median()), float(sr.median())
    out["eps_over_median_If_p"] = eps / max(float(sf.median()) ** p, 1e-45)
    out["groups"] = {}
    for key, s in sorted(stats.items()):
        row = {"mean_w": s["sum_w"] / s["n"], "share_above_0.5": s["above_0.5"] / s["n"],
               "share_below_0.1": s["below_0.1"] / s["n"], "parameters": int(s["n"])}
        if s["tau_sq"] > 0:
            row["norm_w_tau_over_norm_tau"] = (s["wtau_sq"] / s["tau_sq"]) ** 0.5
        out["groups"][key] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weight_map", type=Path)
    parser.add_argument("--task-vector", type=Path)
    parser.add_argument("--p", type=float)
    parser.add_argument("--lam", type=float)
    parser.add_argument("--eps", type=float)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    res = summarise(args.weight_map, args.task_vector, args.p, args.lam, args.eps)
    print(f"{res['weight_map']} ({res['method']}; p={res['p']}, lam={res['lam']}, eps={res['eps']:g}): "
          f"w quantiles 10/50/90% {res['w_quantiles_10_50_90']}; median I_f {res['I_forget_median']:.3g}, "
          f"I_r {res['I_retain_median']:.3g}; eps / median(I_f)^p = {res['eps_over_median_If_p']:.3g}")
    print(f"{'group':<22} {'mean w':>7} {'>0.5':>6} {'<0.1':>6} {'|w.tau|/|tau|':>14} {'params':>11}")
    for key, row in res["groups"].items():
        print(f"{key:<22} {row['mean_w']:>7.3f} {row['share_above_0.5']:>6.3f} {row['share_below_0.1']:>6.3f} "
              f"{row.get('norm_w_tau_over_norm_tau', float('nan')):>14.3f} {row['parameters']:>11,}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
