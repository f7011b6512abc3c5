"""The ``report`` step: an experiment's report from its evaluations, written by
:func:`perta_hub.evaluation.report.finish_experiment` (``results.json``, ``results.md``, ``results.png``,
``report.html`` in the run's folder, or its seed's).

Each model the named evaluate steps evaluated is a row, named by the ``label`` of the step that made it (default:
the step's name; a ``models:`` entry by its name; an ``unlearn`` model by its method and setting, read from its
record; a ``tune`` model ``tune <candidate>``). Rows of ``apply`` and ``tune`` models get the step norm their
records hold. This module gathers what the report is given: the rows, the setup (read from the recipe's steps and
their records), the weight maps' selectivity, ``tune``'s choices and each step's time.
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
    """Every instance ``inst`` needs, directly or not, each once, a step after the steps it needs."""
    seen: dict[int, Instance] = {}

    def walk(i: Instance) -> None:
        for dep in i.needs:
            if id(dep) not in seen:
                walk(dep)
                seen[id(dep)] = dep

    walk(inst)
    return list(seen.values())


def key(model: str | Path) -> str:
    """A model as the labels know it: its resolved path (a Hub id resolves to a path that does not exist, the same
    every time)."""
    return str(Path(model).resolve())


def outputs(plan: Plan, inst: Instance) -> list[Path]:
    """The outputs a finished instance recorded."""
    return [plan.out / p for p in (inst.state() or {}).get("outputs", [])]


def labels(plan: Plan, insts: list[Instance]) -> dict[str, str]:
    """Model -> row name: a ``models:`` entry by its name, every output of ``insts`` by its step's label (unlearn
    models are named by their record)."""
    names = {key(value): name for name, value in plan.recipe.models.items()}
    for inst in insts:
        made = [key(p) for p in outputs(plan, inst)]
        kind, label = inst.step.kind.name, inst.step.label
        if kind in ("evaluate", "report", "push"):
            continue
        if isinstance(label, tuple):
            if len(label) != len(made):
                raise RecipeError(f"{inst.step.path}.label: {len(label)} names for {len(made)} outputs")
            names.update(zip(made, label, strict=True))
        elif label is not None:
            names.update(dict.fromkeys(made, label))
        elif kind == "tune":
            own = ((inst.state() or {}).get("extra") or {}).get("labels", [])
            names.update({o: f"tune {lab}" for o, lab in zip(made, own, strict=True)})
        elif kind != "unlearn":
            names.update(dict.fromkeys(made, inst.name))
    return names


def gather(plan: Plan, inst: Instance) -> list[dict[str, Any]]:
    """The results of the evaluations a report names (each evaluate step's retain model first, when it has one),
    with the step norm their models' records hold (``step_norm``, and ``step`` when ``apply --step`` asked for it)."""
    from perta_hub.records import record_of

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
    for result in results:
        meta = result["meta"]
        record = record_of(meta["model"]) if Path(meta["model"]).is_dir() else None
        for name in ("step_norm", "step"):
            if record is not None and record.get(name) is not None:
                meta[name] = record.get(name)
    return results


def write_report(plan: Plan, inst: Instance, values: dict[str, Any]) -> list[Path]:
    """Write the report into the instance's folder (the run's, or its seed's); returns its ``results.json``."""
    from perta_hub.evaluation.report import finish_experiment, summarise

    insts = needed(inst)
    results = gather(plan, inst)
    by_path = labels(plan, insts)
    names = {str(r["meta"]["model"]): by_path[key(r["meta"]["model"])] for r in results
             if key(r["meta"]["model"]) in by_path}
    rows = [names.get(str(r["meta"]["model"])) or r["meta"].get("method") for r in results]
    if "target" not in rows:
        raise RecipeError(f"{inst.step.path}: no evaluated model is named 'target' (the reference of the utility "
                          "budget); name the target's step target, or give it label: target")
    methods = tuple(values["methods"]) or tuple(dict.fromkeys(
        m for m in rows if m is not None and m not in ("target", "retain") and not m.startswith("tune ")))
    meta = results[-1]["meta"]
    config = ReportConfig(plan.recipe.resolved(), plan.recipe.sha256(), inst.seed, meta.get("forget_split"),
                          meta.get("max_examples"))
    summary = summarise(results, config, names, methods=methods,
                        setup=setup(plan, inst, values, insts, by_path, rows, meta.get("forget_split")))
    summary["recipe"] = {"sha256": config.recipe_sha256, "step": inst.name, "seed": inst.seed,
                         "file": str(plan.out / "recipe.resolved.yaml")}
    summary["weight_maps"] = selectivity(plan, insts, by_path)
    summary["tune"] = tune_report(summary, tuned(summary))
    states = {i.title: i.state() or {} for i in insts}
    summary["timings_s"] = {**{t: s.get("seconds", 0.0) for t, s in states.items()},
                            "total": round(sum(s.get("seconds", 0.0) for s in states.values()), 1)}
    summary["peak_rss_gib"] = {t: s.get("peak_rss_gib") for t, s in states.items()}
    finish_experiment(summary, inst.root, lambda _line: None, plot_title=values.get("plot_title"))
    return [inst.root / "results.json"]


def selectivity(plan: Plan, insts: list[Instance], by_path: dict[str, str]) -> dict[str, Any]:
    """Per label of an ``apply`` step with a weight map: how ``w`` spreads at its p, lam, eps, and
    ``||w ⊙ tau|| / ||tau||`` (:func:`perta_hub.importance.summary.summarise_folder`; per-layer rows left out)."""
    from perta_hub.importance.summary import summarise_folder

    out = {}
    for inst in insts:
        made = outputs(plan, inst)
        if inst.step.kind.name != "apply" or not made:
            continue
        v = plan.values(inst)
        if v.get("weights"):
            label = by_path.get(key(made[0]), inst.name)
            summary = summarise_folder(v["weights"], v["task_vector"], p=v.get("p"), lam=v.get("lam"),
                                       eps=v.get("eps"))
            summary["groups"] = {k: g for k, g in summary["groups"].items() if not k.startswith("layer:")}
            out.setdefault(label, summary)
    return out


def tuned(summary: dict[str, Any]) -> dict[str, tuple[float, Path, dict[str, Any]]]:
    """Per ``tune <label>`` row: the chosen alpha, the model and tune's record of its search."""
    from perta_hub.records import read_record

    out = {}
    for row in summary["rows"]:
        if str(row["method"]).startswith("tune "):
            record = read_record(row["model"]).get("tune") or {}
            out[row["method"].removeprefix("tune ")] = (float(row["alpha"]), Path(row["model"]), record)
    return out


def tune_report(summary: dict[str, Any], chosen: dict[str, tuple[float, Path, dict[str, Any]]]) -> dict[str, Any]:
    """Per tuned label: tune's chosen alpha, how many alphas it evaluated over which span and a warning when the
    choice is at that span's edge, next to the sweep's best alpha within the utility budget by the full TOFU
    evaluation."""
    from perta_hub.tuning.report import edge_warning, searched

    report = {}
    for label, (alpha, _, record) in chosen.items():
        best = (summary["best"].get(label) or {}).get("within_budget")
        row = next((r for r in summary["rows"] if r["method"] == f"tune {label}"), None)
        count, lo, hi = searched(record)
        report[label] = {"chosen_alpha": alpha, "alphas_evaluated": count, "range": [lo, hi],
                         "edge": edge_warning(record),
                         "best_sweep_alpha_in_budget": best["alpha"] if best else None,
                         "chosen": {k: row[k] for k in ("forget_quality", "model_utility")} if row else None,
                         "best_sweep": {k: best[k] for k in ("forget_quality", "model_utility")} if best else None}
    return report


# -- the setup: what the experiment ran, from the recipe's steps and their records ---------------------------------
def setup(plan: Plan, inst: Instance, values: dict[str, Any], insts: list[Instance], by_path: dict[str, str],
          rows: list[str | None], split: str | None) -> Any:
    """The report's :class:`~perta_hub.evaluation.report.Setup`: the target's model, a line per step that trained
    or made something (its data rows and settings), the seeds and a line per method."""
    from perta_hub.evaluation.report import Setup, method_lines

    recipe = plan.recipe
    lines = tuple((i.title, line) for i in insts if (line := step_line(plan, i)) is not None)
    seeds = (inst.seed,) if inst.seed is not None else tuple(sorted({
        int(i.step.effective().get("seed") or 0) for i in insts if i.step.reseeded()})) or (0,)
    variants, searches = [], {}
    for i in insts:
        v = i.step.effective()
        label = i.step.label if isinstance(i.step.label, str) else i.name
        if i.step.kind.name == "apply" and isinstance(v.get("weights"), Ref):
            made_by = recipe.steps.get(v["weights"].name)
            if made_by is not None and made_by.kind.name == "compute-weights":
                variants.append((label, made_by.effective()["method"], float(v.get("p") or 1.0)))
        if i.step.kind.name == "tune":
            own = ((i.state() or {}).get("extra") or {}).get("labels", [])
            names = i.step.label if isinstance(i.step.label, tuple) else [f"tune {n}" for n in own]
            searches.update({str(n).removeprefix("tune "): tune_line(v) for n in names})
    labels_ = tuple(dict.fromkeys(r for r in rows if r is not None))
    title = values.get("title") or f"TOFU {split} unlearning report (`perta-hub run {recipe.name}`)"
    return Setup(title=title, model=model_line(plan, insts, by_path), data=lines, seeds=seeds,
                 methods=method_lines(labels_, variants, searches), smoke_test=values.get("note"))


def model_line(plan: Plan, insts: list[Instance], by_path: dict[str, str]) -> str:
    """The target: what it was fine-tuned from (a tiny model's shape, a Hub id or folder) and its parameters."""
    from perta_hub.records import record_of

    target = next((i for i in insts if any(by_path.get(key(p)) == "target" for p in outputs(plan, i))), None)
    if target is None:
        given = next((v for n, v in plan.recipe.models.items() if n == "target"), "the target")
        return f"{given} (given by the recipe)"
    record = record_of(outputs(plan, target)[0])
    params = f", {record.get('num_parameters'):,} parameters" if record and record.get("num_parameters") else ""
    base = target.step.effective().get("model")
    init = target.need(base.name) if isinstance(base, Ref) and base.name in plan.recipe.steps else None
    if init is not None and init.step.kind.name == "tiny-model":
        v = init.step.effective()
        return (f"a Llama trained from scratch: hidden {v['hidden_size']}, {v['layers']} layers, {v['heads']} heads, "
                f"vocabulary {v['vocab_size']} (a byte-level BPE trained on the text of "
                f"{', '.join(map(str, v['tokenizer_data']))}){params}")
    source = plan.values(target)["model"]
    return f"{source}{params}, fine-tuned into the target (step {target.name}) with its own tokenizer"


def data_text(plan: Plan, value: Any) -> str:
    """``N rows: name = a (40) + rows 0:40 of tofu:full`` of a data value."""
    from perta_hub.recipes.estimate import rows_of

    count = rows_of(plan, value)
    text = f"{count} rows" if count is not None else "rows"
    if isinstance(value, Ref) and value.name in plan.recipe.data:
        return f"{text}: {value.name} = {entry_text(plan, plan.recipe.data[value.name])}"
    return f"{text}: {value}"


def entry_text(plan: Plan, entry: Any) -> str:
    """What a data entry is made of, in words."""
    from perta_hub.recipes.data import Concat, Rows
    from perta_hub.recipes.estimate import rows_of

    if isinstance(entry, Ref):
        return f"{entry.name} ({rows_of(plan, entry)})"
    if isinstance(entry, Rows):
        return f"rows {'' if entry.start is None else entry.start}:{'' if entry.stop is None else entry.stop} of " \
               f"{entry_text(plan, entry.source)}"
    if isinstance(entry, Concat):
        return " + ".join(entry_text(plan, part) for part in entry.parts)
    return str(entry.spec)


def training_text(v: dict[str, Any]) -> str:
    """``2 epochs, lr 0.0001, batch 4``."""
    epochs = v.get("epochs")
    return (f"{epochs:g} epoch{'' if epochs == 1 else 's'}, lr {v.get('lr'):g}, batch {v.get('batch_size')}"
            + (f" x {v['grad_accum']}" if v.get("grad_accum") else ""))


def step_line(plan: Plan, inst: Instance) -> str | None:
    """One line of the setup for a step that trained or made something (None for the others)."""
    from perta_hub.records import record_of

    kind, v = inst.step.kind.name, inst.step.effective()
    if kind == "finetune":
        return f"{data_text(plan, v['data'])}; {training_text(v)}"
    if kind == "task-vector":
        if v.get("forget") is None:
            return f"{v.get('finetuned')} minus {v.get('base')}"
        return f"{v.get('model')} fine-tuned on {data_text(plan, v['forget'])}; {training_text(v)}; minus {v.get('model')}"
    if kind == "compute-weights":
        made = outputs(plan, inst)
        record = record_of(made[0]) if made else None
        if record is None:
            return f"{v['method']} importances"
        return (f"{v['method']} importances at {v.get('model')}: {record.get('forget_data', {}).get('num_examples')} "
                f"forget rows against {record.get('retain_data', {}).get('num_examples')} retain rows")
    if kind == "apply":
        sweep = (f"step norms {', '.join(map(str, v['steps']))}" if v.get("steps")
                 else f"alphas {', '.join(map(str, v.get('alphas') or ()))}")
        extra = "".join(f", {k} {v[k]:g}" for k in ("p", "lam", "eps") if v.get(k) is not None)
        return f"{sweep} of {v.get('task_vector')}" + (f" weighted by {v['weights']}" if v.get("weights") else "") + extra
    if kind == "unlearn":
        retain = f" and {data_text(plan, v['retain'])}" if v.get("retain") else ""
        return f"{v['method']} on {data_text(plan, v['forget'])}{retain}: {training_text(v)}"
    if kind == "tune":
        return tune_line(v)
    return None


def tune_line(v: dict[str, Any]) -> str:
    """tune's search, in one line."""
    from perta_hub.options.tune import DEFAULT_ALPHA_RANGE

    span = v.get("alpha_range") or DEFAULT_ALPHA_RANGE
    grid = f"alphas {', '.join(map(str, v['alphas']))}" if v.get("alphas") else \
        f"alphas in [{span[0]:g}, {span[1]:g}]"
    return (f"budget {v['utility_budget']:g} on the retain answers' probability, {grid}, at most "
            f"{v['max_evals']} evaluated")
