"""Presenting TOFU results: the terminal table of ``evaluate``, model-card ``model-index`` entries, and an
experiment's summary (rows per model, the best settings within the utility budget) and report (``results.md``,
``results.png``, ``report.html``: setup, what the metrics mean, the budget, the best settings, caveats computed
from the run, every row, each step's time)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.evaluation.document import Block, Bullets, Heading, Image, Paragraph, Table, to_html, to_markdown
from perta_hub.evaluation.metric_info import METRICS, REACHED_CRITERION, REACHED_FQ, metric, metric_for_result_key
from perta_hub.evaluation.privacy import ATTACKS
from perta_hub.io.atomic import write_atomic

# (column title, result key, field) shown in the terminal table, one row per model.
COLUMNS = (
    ("forget quality", "forget_quality", "agg_value"),
    ("log10 FQ", "forget_quality", "log10"),
    ("model utility", "model_utility", "agg_value"),
    ("forget TR", "forget_truth_ratio", "agg_value"),
    ("forget prob", "forget_Q_A_Prob", "agg_value"),
    ("forget ROUGE-L", "forget_Q_A_ROUGE", "agg_value"),
    ("retain ROUGE-L", "retain_Q_A_ROUGE", "agg_value"),
    ("forget ES", "extraction_strength", "agg_value"),
    ("retain ES", "retain_extraction_strength", "agg_value"),
    ("PrivLeak", "privleak", "agg_value"),
)
# The privacy table (metric keys): the MIA AUCs, then each attack's PrivLeak (the headline first).
PRIVACY_KEYS = (*ATTACKS, "privleak", *(m.key for m in METRICS if m.key.startswith("privleak_")))
# The metrics whose bootstrap interval the terminal table shows (metric keys; the JSON has every aggregate's).
INTERVAL_KEYS = ("forget_quality", "model_utility", "privleak", "mia_min_k")
# The nine components of model utility (``model_utility.components``), second table: (title, key).
UTILITY_COLUMNS = (
    ("retain prob", "retain_Q_A_Prob"), ("retain ROUGE", "retain_Q_A_ROUGE"), ("retain TR", "retain_Truth_Ratio"),
    ("ra prob", "ra_Q_A_Prob_normalised"), ("ra ROUGE", "ra_Q_A_ROUGE"), ("ra TR", "ra_Truth_Ratio"),
    ("wf prob", "wf_Q_A_Prob_normalised"), ("wf ROUGE", "wf_Q_A_ROUGE"), ("wf TR", "wf_Truth_Ratio"),
)
# The metrics written into a model card (result keys; names from :mod:`perta_hub.evaluation.metric_info`).
CARD_METRICS = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                "extraction_strength", "retain_extraction_strength", "retain_Q_A_Prob", "retain_Q_A_ROUGE",
                "retain_Truth_Ratio", *ATTACKS, "privleak")
# ... and the per-attack PrivLeaks (metric keys: they sit in each attack's entry, ``mia_*.privleak``).
CARD_PRIVLEAKS = tuple(m.key for m in METRICS if m.key.startswith("privleak_"))


def _fmt(value: Any, digits: int = 4, small: int = 3) -> str:
    """A table cell: None as n/a, a float with ``digits`` decimals (``small`` significant digits below 1e-3)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{small}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths,
             strict=True))) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Plain-text tables, one row per evaluated model: the headline TOFU numbers (retain ROUGE-L included),
    then the nine components of model utility (retain, real authors ``ra``, world facts ``wf``)."""
    labels = []
    for res in results:
        label = res.get("meta", {}).get("label") or res.get("meta", {}).get("model", "?")
        if res.get("subset"):
            label += f" (first {res['meta'].get('max_examples')})"
        labels.append(label)
    rows = [[label, *(_fmt(res.get(key, {}).get(field), small=4) for _, key, field in COLUMNS)]
            for label, res in zip(labels, results, strict=True)]
    lines = _aligned(["model", *(c[0] for c in COLUMNS)], rows)
    parts = [(res.get("model_utility") or {}).get("components") or {} for res in results]
    if any(parts):
        lines += ["", "model utility components:"]
        lines += _aligned(["model", *(c[0] for c in UTILITY_COLUMNS)],
                          [[label, *(_fmt(part.get(key), small=4) for _, key in UTILITY_COLUMNS)]
                           for label, part in zip(labels, parts, strict=True)])
    if any(res.get(a) for res in results for a in ATTACKS):
        lines += ["", "privacy: MIA AUC (forget = members vs holdout; 0.5 = no signal) and PrivLeak in % "
                  "((AUC - AUC retain) / AUC retain: > 0 still leaks, < 0 over-unlearned, 0 = as the retain model):"]
        lines += _aligned(["model", *(metric(k).label for k in PRIVACY_KEYS)],
                          [[label, *(_fmt(metric(k).value(res), small=4) for k in PRIVACY_KEYS)]
                           for label, res in zip(labels, results, strict=True)])
    boot = [res.get("bootstrap") for res in results]
    if any(boot):
        b = next(x for x in boot if x)
        lines += ["", f"{b['level'] * 100:g} % bootstrap intervals ({b['method']}, {b['resamples']} resamples of the "
                  f"question rows, seed {b['seed']}):"]
        lines += _aligned(["model", *(metric(k).label for k in INTERVAL_KEYS)],
                          [[label, *(_interval((x or {}).get("intervals", {}).get(k)) for k in INTERVAL_KEYS)]
                           for label, x in zip(labels, boot, strict=True)])
    notes = {res[key].get("message") for res in results for key in ("forget_quality", "privleak")
             if (res.get(key) or {}).get("message")}
    return "\n".join(lines + sorted(notes))


def _interval(bounds: Sequence[float] | None) -> str:
    """A table cell ``[low, high]`` (n/a without an interval)."""
    return "n/a" if not bounds else f"[{_fmt(bounds[0], 3)}, {_fmt(bounds[1], 3)}]"


# -- a sweep's summary and its report (``results.md``, ``results.png``, ``report.html``) -------------------------

#: a setting counts when its model utility is at least this fraction of the target's
UTILITY_BUDGET = 0.95
#: the report's files, in an experiment's output folder
REPORT_FILES = ("results.md", "results.png", "report.html")
#: one line per method label (PerTA variants and ``tune`` rows are described by :func:`method_lines`)
METHOD_LINES = {
    "target": "the model trained on the retain and the forget data: what is unlearned from",
    "retain": "the model trained on the retain data only: the reference forget quality compares with",
    "tv": "task-vector negation: target - alpha x tau, tau = (target fine-tuned on the forget data) - target",
    "ga": "GradAscent (`perta-hub unlearn --method ga`): gradient ascent on the forget answers' loss",
    "gd": "GradDiff (`unlearn --method gd`): ascent on the forget loss plus descent on the retain loss",
    "npo": "NPO (`unlearn --method npo`): negative preference optimisation on the forget answers against the "
           "frozen target, plus the retain loss",
}


@dataclass(frozen=True)
class Setup:
    """What an experiment ran, for the head of its report (kept in ``results.json`` as ``setup``).

    Attributes:
        title: the report's title.
        model: the models, in one line (architecture or Hub id, parameters).
        data: ``(what, rows and recipe)`` lines: every training and weight map, with its row count.
        seeds: the seeds of the run (one run per seed).
        methods: label -> what it is, in one line (:func:`method_lines`).
        smoke_test: why the run is useful when no method forgets (said only then), or None.
    """

    title: str
    model: str
    data: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    methods: dict[str, str]
    smoke_test: str | None = None


def method_lines(labels: Sequence[str], variants: Sequence[tuple[str, str, float]] = (),
                 tune: dict[str, str] | None = None) -> dict[str, str]:
    """One line per method label: :data:`METHOD_LINES`, ``perta-<map>`` and the ``(label, map, p)`` variants
    from :mod:`perta_hub.importance.methods`, and ``tune <label>`` rows from ``tune`` (label -> its search)."""
    from perta_hub.importance.methods import METHODS

    maps = {f"perta-{name}": (name, 1.0) for name in METHODS} | {label: (m, p) for label, m, p in variants}
    lines = {}
    for label in labels:
        if label in METHOD_LINES:
            lines[label] = METHOD_LINES[label]
        elif label in maps:
            name, p = maps[label]
            lines[label] = (f"PerTA ({METHODS[name].paper_name}{f', p = {p:g}' if p != 1 else ''}): target - alpha "
                            f"x (w ⊙ tau), w in [0, 1] per parameter from the forget and retain importances "
                            f"({METHODS[name].help})")
        elif label.startswith("tune ") and tune and label.removeprefix("tune ") in tune:
            lines[label] = f"the alpha `perta-hub tune` chose for {label.removeprefix('tune ')}: " \
                           f"{tune[label.removeprefix('tune ')]}"
        else:
            lines[label] = "(no description)"
    return lines


def _summary_row(result: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A model's row: its method and setting (``step``: the step norm ``apply --step`` asked for, ``step_norm``: the
    one measured), and every metric of :data:`METRICS` (None where absent)."""
    meta = result["meta"]
    method = names.get(str(meta["model"])) or meta.get("method") or Path(meta["model"]).name
    row = {"model": meta["model"], "method": method, "alpha": meta.get("alpha"), "setting": meta.get("setting"),
           "step_norm": meta.get("step_norm"), "step": meta.get("step")}
    for info in METRICS:
        row[info.key] = (result.get(info.result_key) or {}).get(info.field)
    return row


def best_settings(rows: Sequence[dict[str, Any]], methods: Sequence[str], threshold: float
                  ) -> dict[str, dict[str, Any]]:
    """Per method (those with rows): ``within_budget``, the row with the highest forget quality among those with
    model utility >= ``threshold`` (None when no row keeps it), and ``highest_forget_quality`` among all its
    rows; ties go to the higher utility."""
    def key(row: dict[str, Any]) -> tuple[float, float]:
        return (row["forget_quality"] or 0.0, row["model_utility"] or 0.0)

    best = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if mine:
            kept = [r for r in mine if (r["model_utility"] or 0.0) >= threshold]
            best[method] = {"within_budget": max(kept, key=key) if kept else None,
                            "highest_forget_quality": max(mine, key=key)}
    return best


def summarise(results: list[dict[str, Any]], cfg: Any, names: dict[str, str],
              methods: tuple[str, ...] = ("tv", "perta-grad", "perta-fisher"), *, setup: Setup | None = None,
              budget: float = UTILITY_BUDGET) -> dict[str, Any]:
    """The summary of a sweep (``results.json``): rows per model, the utility budget, per method the best setting
    within it (:func:`best_settings`), the rows each split was evaluated on and the ``setup``.

    ``names`` maps a model path to its row name (``target``, ``retain``); others are named by method.
    """
    rows = [_summary_row(r, names) for r in results]
    target_mu = next(r["model_utility"] for r in rows if r["method"] == "target")
    meta = results[0]["meta"]
    return {"config": asdict(cfg), "setup": asdict(setup) if setup else None, "rows": rows,
            "target_model_utility": target_mu,
            "utility_budget": {"fraction": budget, "threshold": budget * target_mu},
            "best": best_settings(rows, methods, budget * target_mu),
            "evaluation": {"rows": meta.get("num_examples"), "splits": meta.get("splits"), "subset": meta.get("subset"),
                           "max_examples": meta.get("max_examples"),
                           "max_new_tokens": meta.get("max_new_tokens"), "dtype": meta.get("dtype"),
                           "forget_split": meta.get("forget_split")}}


def ks_ladder(n: int, floor: float = 1e-3) -> list[float]:
    """The forget-quality values possible with ``n`` forget questions on each side, ascending, those >= ``floor``
    (distinct at 3 significant digits): the KS statistic is a multiple of 1/n, so its p-value takes n values."""
    from perta_hub.evaluation.metrics import forget_quality

    values = [forget_quality(list(range(n)), [i + k for i in range(n)]) for k in range(n, 0, -1)]
    return sorted({float(f"{v:.3g}") for v in values if v >= floor})


def _setting(row: dict[str, Any], named: bool = False) -> str:
    """``alpha`` of a task-arithmetic row (with its step norm when named), the ``lr=..,ep=..`` of a gradient one."""
    if row.get("alpha") is not None:
        if not named:
            return _fmt(row["alpha"])
        step = f", step {row['step_norm']:.2f}" if row.get("step_norm") is not None else ""
        return f"alpha {row['alpha']:g}{step}"
    return str(row.get("setting") or "n/a")


def _point(row: dict[str, Any]) -> str:
    """``<method> at <setting> (FQ x, MU y)``."""
    return (f"{row['method']} at {_setting(row, True)} (FQ {_fmt(row['forget_quality'])}, "
            f"MU {_fmt(row['model_utility'])})")


def results_table(summary: dict[str, Any]) -> Table:
    """Every row: method, alpha / setting, the step norm when any row has one, the column metrics with values."""
    rows = summary["rows"]
    steps = any(r.get("step_norm") is not None for r in rows)
    shown = [m for m in METRICS if m.column and any(r.get(m.key) is not None for r in rows)]
    header = ("method", "alpha / setting", *(("step ‖αw⊙τ‖/‖τ‖",) if steps else ()), *(m.label for m in shown))
    body = tuple((str(r["method"]), _setting(r), *((_fmt(r.get("step_norm"), 2),) if steps else ()),
                  *(_fmt(r.get(m.key), m.digits) for m in shown)) for r in rows)
    return Table(header, body)


def _definitions(summary: dict[str, Any]) -> Table:
    """The metrics the rows hold: name, meaning, which direction is better."""
    held = [m for m in METRICS if any(r.get(m.key) is not None for r in summary["rows"])]
    return Table(("metric", "column", "meaning", "better"),
                 tuple((m.name, m.label if m.column else "(in results.json)", m.meaning, m.better) for m in held))


def _reached(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each method's best setting within the budget that reaches :data:`REACHED_FQ`."""
    return [b["within_budget"] for b in summary["best"].values()
            if b["within_budget"] and (b["within_budget"]["forget_quality"] or 0.0) >= REACHED_FQ]


def _top_within(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The row with the highest forget quality within the budget, any method (None when no row keeps it)."""
    kept = [b["within_budget"] for b in summary["best"].values() if b["within_budget"]]
    return max(kept, key=lambda r: (r["forget_quality"] or 0.0, r["model_utility"] or 0.0), default=None)


def _per_split(evaluation: dict[str, Any]) -> str:
    """``forget01_perturbed 40, retain_perturbed 40, ...``: the rows evaluated per split (by file when known)."""
    names = evaluation.get("splits") or {}
    return ", ".join(f"{names.get(split, split)} {k}" for split, k in (evaluation.get("rows") or {}).items())


def verdict(summary: dict[str, Any]) -> str:
    """One line: which methods reached the retain model's forget quality within the budget, or that none did."""
    reached = _reached(summary)
    if reached:
        return (f"Reached forget quality >= {REACHED_FQ:g} within the utility budget: "
                + "; ".join(_point(r) for r in reached)
                + ".")
    top = _top_within(summary)
    toy = "on this toy" if (summary.get("setup") or {}).get("smoke_test") else "in this run"
    return (f"**No method forgets {toy}**: none reaches forget quality {REACHED_FQ:g} within the utility budget"
            + (f"; the highest within it: {_point(top)}." if top else "; no setting keeps the budget.")
            + " See the caveats.")


def caveats(summary: dict[str, Any]) -> list[str]:
    """The caveats computed from the run: rows evaluated and the KS ladder, the seeds, whether any method reached
    the retain model's forget quality (and, for a smoke test, why the run is still useful), FQ outside the
    budget, the evaluation's reductions."""
    setup = summary.get("setup") or {}
    evaluation = summary.get("evaluation") or {}
    rows_per_split = evaluation.get("rows") or {}
    n = rows_per_split.get("forget")
    out = []
    if n:
        ladder = ", ".join(f"{v:g}" for v in ks_ladder(n))
        out.append(f"**Rows evaluated**: {n} forget questions (per split: {_per_split(evaluation)}). With {n} questions on each side the KS statistic is a multiple of 1/{n}, so forget quality "
                   f"can only take these values (those >= 0.001): {ladder}. One step of this ladder is one "
                   f"question's place in the statistic: read a difference of one step as a tie.")
    seeds = setup.get("seeds") or []
    if len(seeds) == 1:
        out.append(f"**One seed** ({seeds[0]}): every number is one run, without confidence intervals; a "
                   "difference between methods is a measurement on this run, not a significance test.")
    elif seeds:
        out.append(f"**Seeds**: {', '.join(map(str, seeds))}.")
    target = next((r for r in summary["rows"] if r["method"] == "target"), None)
    criterion = f"Criterion for reaching the retain model: {REACHED_CRITERION}."
    if target is not None and target.get("forget_quality") is not None:
        criterion += f" The target itself has forget quality {_fmt(target['forget_quality'])}."
    out.append(criterion)
    reached = _reached(summary)
    budget = summary["utility_budget"]
    outside = [b["highest_forget_quality"] for b in summary["best"].values()
               if (b["highest_forget_quality"]["model_utility"] or 0.0) < budget["threshold"]
               and b["highest_forget_quality"]["forget_quality"] is not None]
    if reached:
        short = [b["within_budget"] for b in summary["best"].values()
                 if b["within_budget"] and (b["within_budget"]["forget_quality"] or 0.0) < REACHED_FQ]
        out.append("**Reached within the budget**: " + "; ".join(_point(r) for r in reached)
                   + (". Not reached: " + "; ".join(_point(r) for r in short) if short else "") + ".")
    else:
        top = _top_within(summary)
        line = (f"**No method reached the retain model's forget quality** (>= {REACHED_FQ:g}) within the budget"
                + (f": the highest within it is {_point(top)}." if top else ": no setting keeps the budget."))
        late = [r for r in outside if (r["forget_quality"] or 0.0) >= REACHED_FQ]
        if late:
            line += " Outside the budget: " + "; ".join(_point(r) for r in late) + " (utility lost: not a win)."
        out.append(line)
        if setup.get("smoke_test"):
            out.append(f"**No method forgets on this toy.** {setup['smoke_test']} {_memorised(summary)}")
    if outside:
        out.append(f"**Forget quality outside the utility budget is not a win** (bought with utility, collapsed "
                   f"utility at worst): outside the budget (MU < "
                   f"{_fmt(budget['threshold'])}) are " + "; ".join(_point(r) for r in outside)
                   + ". The best-setting table lists them as outside the budget, never as a method's best.")
    tokens = evaluation.get("max_new_tokens")
    if tokens is not None and tokens < 200:
        out.append(f"ROUGE is measured on at most {tokens} generated tokens, not the benchmark's 200.")
    if evaluation.get("subset"):
        out.append(f"Each split is cut to its first {evaluation.get('max_examples')} rows (shorter splits whole): the "
                   "numbers compare the methods here with each other, not with published ones on whole splits.")
    return out


def _memorised(summary: dict[str, Any]) -> str:
    """What the smoke test did show: the target memorised the forget set, the retain model did not, and the forget
    ES at each method's strongest setting."""
    by = {r["method"]: r for r in summary["rows"] if r["method"] in ("target", "retain")}
    es = "forget_extraction_strength"
    parts = []
    if "target" in by and "retain" in by:
        parts.append(f"Here the target memorised the forget answers (forget ES {_fmt(by['target'][es], 2)}) and the "
                     f"retain model did not ({_fmt(by['retain'][es], 2)})")
    strongest = []
    for method in summary["best"]:
        mine = [r for r in summary["rows"] if r["method"] == method and r.get("alpha") is not None]
        if mine:
            top = max(mine, key=lambda r: r["alpha"])
            strongest.append(f"{method} {_fmt(top[es], 2)} at alpha {top['alpha']:g}")
    if strongest:
        parts.append("forget ES falls with alpha to " + ", ".join(strongest))
    return "; ".join(parts) + "." if parts else ""


def _best_table(summary: dict[str, Any]) -> Table:
    """Per method: the best setting within the budget and, when it differs, the highest FQ outside it."""
    rows = []
    for method, best in summary["best"].items():
        kept, top = best["within_budget"], best["highest_forget_quality"]
        other = "same setting" if top == kept else \
            f"{_fmt(top['forget_quality'])} at {_setting(top, True)}, MU {_fmt(top['model_utility'])}: outside the budget"
        if kept is None:
            rows.append((method, "no setting keeps the budget", "", "", "", other))
        else:
            rows.append((method, _setting(kept, True), _fmt(kept["forget_quality"]), _fmt(kept["model_utility"]),
                         _fmt(kept["forget_extraction_strength"]), other))
    return Table(("method", "best setting within the budget", "forget quality", "model utility", "ES forget",
                  "highest FQ of any setting"), tuple(rows))


def _tune_lines(tune: dict[str, Any]) -> list[str]:
    """The demo's ``tune`` entries: chosen alpha, alphas evaluated, edge warning, against the sweep's best."""
    lines = []
    for label, t in tune.items():
        line = f"`tune` on {label} chose alpha {t['chosen_alpha']:g}"
        if t.get("alphas_evaluated") is not None:
            line += f" after evaluating {t['alphas_evaluated']} alphas in [{t['range'][0]:g}, {t['range'][1]:g}]"
        if t.get("chosen"):
            line += f" (FQ {_fmt(t['chosen']['forget_quality'])}, MU {_fmt(t['chosen']['model_utility'])})"
        if t.get("best_sweep"):
            line += (f"; the sweep's best within the budget: alpha {t['best_sweep_alpha_in_budget']:g} (FQ "
                     f"{_fmt(t['best_sweep']['forget_quality'])}, MU {_fmt(t['best_sweep']['model_utility'])})")
        lines.append(line + "." + (f" **Warning: {t['edge']}.**" if t.get("edge") else ""))
    return lines


def _times(summary: dict[str, Any]) -> list[Block]:
    timings = summary.get("timings_s") or {}
    peaks = summary.get("peak_rss_gib")
    per_step = isinstance(peaks, dict)
    header = ("step", "wall time (s)", *(("peak RSS so far (GiB)",) if per_step else ()))
    rows = tuple((name, f"{seconds:.1f}", *((_fmt(peaks.get(name), 2),) if per_step else ()))
                 for name, seconds in timings.items())
    blocks: list[Block] = [Table(header, rows)]
    if isinstance(peaks, (int, float)):
        blocks.append(Paragraph(f"Peak RSS: {peaks:.2f} GiB."))
    return blocks


def _setup_blocks(summary: dict[str, Any]) -> list[Block]:
    setup = summary.get("setup")
    if not setup:
        return [Paragraph("(The setup was not recorded with this summary.)")]
    evaluation = summary.get("evaluation") or {}
    rows = evaluation.get("rows") or {}
    seeds = setup.get("seeds") or []
    table = [("model", setup["model"]), *(tuple(pair) for pair in setup["data"])]
    if rows:
        table.append(("evaluated", f"TOFU {evaluation.get('forget_split')}, the first rows of each split: "
                      f"{_per_split(evaluation)}; greedy answers of at most {evaluation.get('max_new_tokens')} tokens, "
                      f"{evaluation.get('dtype')}"))
    table.append(("seeds", (f"one: {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)}: {', '.join(map(str, seeds))}")
                  if seeds else "not recorded"))
    return [Table(("", ""), tuple(table)), Paragraph("Methods:"),
            Bullets(tuple(f"**{label}**: {line}" for label, line in setup["methods"].items()))]


def report_blocks(summary: dict[str, Any], plot: str = "results.png") -> list[Block]:
    """The report, in order: setup, what the metrics mean, the utility budget, the best setting per method within
    it, the front plot, the caveats computed from the run, every row, each step's time."""
    setup = summary.get("setup") or {}
    budget = summary["utility_budget"]
    retain = next((r for r in summary["rows"] if r["method"] == "retain"), None)
    best: list[Block] = [_best_table(summary)]
    if summary.get("tune"):
        best += [Paragraph("The alphas chosen by `perta-hub tune` (its own signals: forget NLL, retain-answer "
                           "probability):"), Bullets(tuple(_tune_lines(summary["tune"])))]
    return [
        Heading(setup.get("title") or "Unlearning report", 1),
        Heading("Setup"), *_setup_blocks(summary),
        Heading("What the numbers mean"),
        Paragraph("Forget quality and model utility are TOFU's headline numbers (open-unlearning's definitions, "
                  "docs/evaluate.md); the retain model, never trained on the forget data, is the goal on the "
                  "forget side."),
        _definitions(summary),
        Heading("Utility budget"),
        Paragraph(f"A setting counts only if it keeps model utility >= {budget['fraction']:g} x the target's: "
                  f"{budget['fraction']:g} x {_fmt(summary['target_model_utility'])} = **{_fmt(budget['threshold'])}**"
                  + (f" (the retain model's: {_fmt(retain['model_utility'])})." if retain else ".")),
        Heading("Best setting per method within the budget"),
        Paragraph(verdict(summary)),
        Paragraph("The highest forget quality among the settings within the budget (ties: the higher utility)."),
        *best,
        Heading("Forget quality against model utility"),
        Image("forget quality against model utility, one curve per method", plot),
        Heading("Caveats (computed from this run)"),
        Bullets(tuple(caveats(summary))),
        Heading("Every setting"),
        results_table(summary),
        Heading("Time per step"),
        *_times(summary),
    ]


def report_markdown(summary: dict[str, Any]) -> str:
    """The report as markdown (``results.md``)."""
    return to_markdown(report_blocks(summary))


def terminal_summary(summary: dict[str, Any]) -> str:
    """What an experiment prints at its end: every setting, the best within the budget, the caveats."""
    budget = summary["utility_budget"]
    return to_markdown([results_table(summary),
                        Paragraph(f"Utility budget: model utility >= {budget['fraction']:g} x the target's = "
                                  f"{_fmt(budget['threshold'])}."),
                        _best_table(summary), Paragraph(verdict(summary)), Bullets(tuple(caveats(summary)))])


def write_report(summary: dict[str, Any], out_dir: str | Path, *, plot_title: str | None = None) -> list[Path]:
    """Write ``results.md``, ``results.png`` (:func:`perta_hub.evaluation.plot.plot_methods`) and a
    self-contained ``report.html`` (the plot embedded) into ``out_dir``; returns their absolute paths."""
    from perta_hub.evaluation.plot import plot_methods

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    md, png, page = (out / name for name in REPORT_FILES)
    plot_methods(summary, png, **({"title": plot_title} if plot_title else {}))
    blocks = report_blocks(summary, plot=png.name)
    write_atomic(md, to_markdown(blocks).encode("utf-8"))
    title = (summary.get("setup") or {}).get("title") or "Unlearning report"
    write_atomic(page, to_html(blocks, title, out).encode("utf-8"))
    return [md, png, page]


def report_location(paths: Sequence[str | Path]) -> str:
    """Where the report is: one absolute path a line (what an experiment prints last)."""
    return "Report:\n" + "\n".join(f"  {Path(p).resolve()}" for p in paths)


def finish_experiment(summary: dict[str, Any], out_dir: str | Path, echo: Callable[[str], None], *,
                      plot_title: str | None = None) -> dict[str, Any]:
    """End an experiment: write the report (:func:`write_report`) and ``results.json`` (the summary, with
    ``report_files``), then echo the summary (:func:`terminal_summary`) and where the report is."""
    files = write_report(summary, out_dir, plot_title=plot_title)
    summary["report_files"] = [str(p) for p in files]
    write_atomic(files[0].parent / "results.json", (json.dumps(summary, indent=2, default=str) + "\n").encode("utf-8"))
    echo(terminal_summary(summary))
    echo(report_location(files))
    return summary


def eval_results(results: dict[str, Any]) -> list[Any]:
    """The headline numbers as ``huggingface_hub.EvalResult`` entries (for ``ModelCardData.eval_results``).

    Dataset ``locuslab/TOFU`` with the forget split as config; a subset run records
    ``dataset_args={"max_examples": N}``. Forget quality is left out when it is None.
    """
    from huggingface_hub import EvalResult

    meta = results.get("meta", {})
    split = meta.get("forget_split")
    args = {"max_examples": meta.get("max_examples")} if results.get("subset") else None
    out = []
    for key, info in [*((k, metric_for_result_key(k)) for k in CARD_METRICS), *((k, metric(k)) for k in CARD_PRIVLEAKS)]:
        name = info.name
        value = info.value(results)
        if value is None:
            continue
        out.append(EvalResult(
            task_type="text-generation", task_name="Machine unlearning (TOFU)",
            dataset_type="locuslab/TOFU", dataset_name="TOFU", dataset_config=split, dataset_split="train",
            dataset_args=args, metric_type=key, metric_name=name, metric_value=round(float(value), 6),
        ))
    return out


def write_card(model_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write the results into ``model_dir/README.md`` as ``model-index`` entries (``huggingface_hub.ModelCard``).

    An existing card keeps its text and other metadata; earlier TOFU results for the same forget
    split and metric are replaced, results on other datasets are kept.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(f"--write-card needs a local model folder; {model_dir} is not one")
    path = folder / "README.md"
    new = eval_results(results)
    if path.is_file():
        card = ModelCard.load(path)
    else:
        data = ModelCardData(library_name="transformers", tags=["perta", "machine-unlearning"])
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {folder.name}\n\nEvaluated with `perta-hub evaluate`.\n")
    replaced = {(r.dataset_type, r.dataset_config, r.metric_type) for r in new}
    kept = [r for r in (card.data.eval_results or [])
            if (r.dataset_type, r.dataset_config, r.metric_type) not in replaced]
    card.data.eval_results = kept + new
    if not card.data.model_name:
        card.data.model_name = folder.resolve().name
    write_atomic(path, str(card).encode("utf-8"))  # the bytes ModelCard.save writes, never half-written
    return path
