"""The ``report`` step: an experiment's ``<step>.json``, ``.md`` and ``.png`` from its evaluations.

Each model the named evaluate steps evaluated is a row, named by the ``label`` of the step that made it (default:
the step's name; an ``unlearn`` model: its method and setting, read from its record; a ``tune`` model: ``tune`` and
its candidate). Rows of ``apply`` and ``tune`` models get their step norm ``alpha x ||w ⊙ tau|| / ||tau||``. The
summary, table and plot are :mod:`perta_hub.evaluation.report`'s and :mod:`perta_hub.evaluation.plot`'s; this
module only gathers what they are given, and adds the recipe, the weight maps' selectivity, tune's choices and each
step's time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import RecipeError
from perta_hub.recipes.plan import Instance, Plan
from perta_hub.recipes.values import Ref


@dataclass(frozen=True)
class ReportConfig:
    """The summary's ``config``: the recipe as run and the facts of the evaluation."""

    recipe: dict[str, Any]
    recipe_sha256: str
    seed: int | None
    forget_split: str | None
    eval_examples: int | None


def needed(inst: Instance) -> list[Instance]:
    """Every instance ``inst`` needs, directly or not, in run order of discovery (each once)."""
    seen: dict[int, Instance] = {}

    def walk(i: Instance) -> None:
        for dep in i.needs:
            if id(dep) not in seen:
                walk(dep)
                seen[id(dep)] = dep

    walk(inst)
    return list(seen.values())


def labels(plan: Plan, insts: list[Instance]) -> dict[str, str]:
    """Model (resolved path or Hub id) -> row name: a ``models:`` entry by its name, every output of ``insts`` by
    its step's label (unlearn models are named by their record)."""
    out = plan.out
    names = {key(value): name for name, value in plan.recipe.models.items()}
    for inst in insts:
        state = inst.state() or {}
        outputs = [key(out / p) for p in state.get("outputs", [])]
        kind, label = inst.step.kind.name, inst.step.label
        if kind in ("evaluate", "report", "push"):
            continue
        if isinstance(label, tuple):
            if len(label) != len(outputs):
                raise RecipeError(f"{inst.step.path}.label: {len(label)} names for {len(outputs)} outputs")
            names.update(zip(outputs, label, strict=True))
        elif label is not None:
            names.update(dict.fromkeys(outputs, label))
        elif kind == "tune":
            own = (state.get("extra") or {}).get("labels", [])
            names.update({o: f"tune {lab}" for o, lab in zip(outputs, own, strict=True)})
        elif kind != "unlearn":
            names.update(dict.fromkeys(outputs, inst.name))
    return names


def key(model: str | Path) -> str:
    """A model as the labels know it: its resolved path (a Hub id resolves to a path that does not exist, the same
    every time)."""
    return str(Path(model).resolve())


def gather(plan: Plan, inst: Instance) -> list[dict[str, Any]]:
    """The results of the evaluations a report names (each evaluate step's retain model first, when it has one)."""
    results = []
    for ref in inst.step.values["evaluations"]:
        if not isinstance(ref, Ref) or ref.name not in plan.recipe.steps or \
                plan.recipe.steps[ref.name].kind.name != "evaluate":
            raise RecipeError(f"{inst.step.path}.evaluations: {ref} is not the output of an evaluate step")
        for path in plan.resolve(inst, ref):
            data = json.loads(Path(path).read_text())
            retain = Path(path).with_name(Path(path).stem + ".retain.json")
            if retain.is_file():
                results.append(json.loads(retain.read_text()))
            results += data.get("models", [data])
    return results


def step_norms(results: list[dict[str, Any]], insts: list[Instance], out: Path) -> None:
    """Set ``meta.step_norm`` = alpha x ``||w ⊙ tau|| / ||tau||`` on the rows of apply and tune models."""
    ratio: dict[str, float] = {}
    for inst in insts:
        state = inst.state() or {}
        extra = state.get("extra") or {}
        if isinstance(extra.get("norm_ratio"), dict):  # tune: one per chosen model
            ratio.update({key(k): v for k, v in extra["norm_ratio"].items() if v is not None})
        elif extra.get("norm_ratio") is not None:
            ratio.update(dict.fromkeys((key(out / p) for p in state.get("outputs", [])), extra["norm_ratio"]))
    for result in results:
        meta = result["meta"]
        model = key(meta["model"])
        if model in ratio and meta.get("alpha") is not None:
            meta["step_norm"] = meta["alpha"] * ratio[model]


def write_report(plan: Plan, inst: Instance, values: dict[str, Any]) -> list[Path]:
    """Write ``<root>/<step>.json``, ``.md`` and ``.png``; returns the JSON's path."""
    from perta_hub.evaluation.plot import plot_methods
    from perta_hub.evaluation.report import results_markdown, summarise
    from perta_hub.io.atomic import write_atomic

    out = plan.out
    insts = needed(inst)
    results = gather(plan, inst)
    by_path = labels(plan, insts)
    names = {str(r["meta"]["model"]): by_path[key(r["meta"]["model"])] for r in results
             if key(r["meta"]["model"]) in by_path}
    step_norms(results, insts, out)
    rows = [names.get(str(r["meta"]["model"])) or r["meta"].get("method") for r in results]
    if "target" not in rows:
        raise RecipeError(f"{inst.step.path}: no evaluated model is named 'target' (the reference of the utility "
                          "budget); name the target's step target, or give it label: target")
    methods = tuple(values["methods"]) or tuple(dict.fromkeys(
        m for m in rows if m is not None and m not in ("target", "retain")))
    meta = results[-1]["meta"]
    config = ReportConfig(plan.recipe.resolved(), plan.recipe.sha256(), inst.seed, meta.get("forget_split"),
                          meta.get("max_examples"))
    summary = summarise(results, config, names, methods=methods)
    summary["recipe"] = {"sha256": config.recipe_sha256, "step": inst.name, "seed": inst.seed,
                         "file": str(out / "recipe.resolved.yaml")}
    summary["weight_maps"] = {}  # label -> the selectivity of its map at its p, lam, eps (apply steps)
    for i in insts:
        state = i.state() or {}
        if "selectivity" in (state.get("extra") or {}):
            label = by_path.get(key(out / state["outputs"][0]), i.name)
            summary["weight_maps"][label] = state["extra"]["selectivity"]
    tuned = {r["method"].removeprefix("tune "): (r["alpha"], r["model"]) for r in summary["rows"]
             if str(r["method"]).startswith("tune ")}
    summary["tune"] = tune_report(summary, tuned)
    timings = {i.title: (i.state() or {}).get("seconds", 0.0) for i in insts}
    summary["timings_s"] = {**timings, "total": round(sum(timings.values()), 1)}
    summary["peak_rss_gib"] = max([(i.state() or {}).get("peak_rss_gib", 0.0) for i in insts] or [0.0])
    root = inst.root
    paths = [root / f"{inst.name}{suffix}" for suffix in (".json", ".md", ".png")]
    write_atomic(paths[0], json.dumps(summary, indent=2, default=str) + "\n")
    write_atomic(paths[1], results_markdown(summary))
    plot_methods(summary, paths[2], title=values.get("title") or f"TOFU {config.forget_split}")
    return [paths[0]]


def tune_report(summary: dict[str, Any], tuned: dict[str, tuple[float, Any]]) -> dict[str, Any]:
    """Per tuned label: tune's chosen alpha next to the sweep's best alpha within the utility budget by the full
    TOFU evaluation (forget quality at model utility >= 0.95 x the target's)."""
    report = {}
    for label, (alpha, _) in tuned.items():
        best = (summary["best"].get(label) or {}).get("best_forget_quality_at_utility_95pct")
        row = next((r for r in summary["rows"] if r["method"] == f"tune {label}"), None)
        report[label] = {"chosen_alpha": alpha, "best_sweep_alpha_in_budget": best["alpha"] if best else None,
                         "chosen": {k: row[k] for k in ("forget_quality", "model_utility")} if row else None,
                         "best_sweep": {k: best[k] for k in ("forget_quality", "model_utility")} if best else None}
    return report
