"""Presenting TOFU results: the terminal table, model-card ``model-index`` entries, and a sweep's summary (rows
per model, the best settings within the utility budget) as markdown (``perta-hub demo``'s ``results.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.evaluation.metric_info import BY_KEY
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
# The privacy table (third table) and the privacy rows of a card: the MIA AUCs, then each attack's PrivLeak.
PRIVACY_KEYS = (*ATTACKS, "privleak", *(m for m in BY_KEY if m.startswith("privleak_")))
# The metrics whose bootstrap interval the terminal table shows (all of them are in the JSON).
INTERVAL_KEYS = ("forget_quality", "model_utility", "privleak", "mia_min_k", "forget_Q_A_ROUGE", "extraction_strength")
# The nine components of model utility (``model_utility.components``), second table: (title, key).
UTILITY_COLUMNS = (
    ("retain prob", "retain_Q_A_Prob"), ("retain ROUGE", "retain_Q_A_ROUGE"), ("retain TR", "retain_Truth_Ratio"),
    ("ra prob", "ra_Q_A_Prob_normalised"), ("ra ROUGE", "ra_Q_A_ROUGE"), ("ra TR", "ra_Truth_Ratio"),
    ("wf prob", "wf_Q_A_Prob_normalised"), ("wf ROUGE", "wf_Q_A_ROUGE"), ("wf TR", "wf_Truth_Ratio"),
)
# The metrics written into a model card: (result key, human name).
CARD_METRICS = (
    ("forget_quality", "Forget quality (KS-test p-value)"),
    ("model_utility", "Model utility (harmonic mean of 9)"),
    ("forget_truth_ratio", "Forget truth ratio"),
    ("forget_Q_A_Prob", "Forget probability"),
    ("forget_Q_A_ROUGE", "Forget ROUGE-L recall"),
    ("extraction_strength", "Forget extraction strength"),
    ("retain_extraction_strength", "Retain extraction strength"),
    ("retain_Q_A_Prob", "Retain probability"),
    ("retain_Q_A_ROUGE", "Retain ROUGE-L recall"),
    ("retain_Truth_Ratio", "Retain truth ratio"),
    *((key, BY_KEY[key].name) for key in PRIVACY_KEYS),
)


def _fmt(value: Any, digits: int = 4, small: int = 4) -> str:
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
    rows = [[label, *(_fmt(res.get(key, {}).get(field)) for _, key, field in COLUMNS)]
            for label, res in zip(labels, results, strict=True)]
    lines = _aligned(["model", *(c[0] for c in COLUMNS)], rows)
    parts = [(res.get("model_utility") or {}).get("components") or {} for res in results]
    if any(parts):
        lines += ["", "model utility components:"]
        lines += _aligned(["model", *(c[0] for c in UTILITY_COLUMNS)],
                          [[label, *(_fmt(part.get(key)) for _, key in UTILITY_COLUMNS)]
                           for label, part in zip(labels, parts, strict=True)])
    if any(res.get(a) for res in results for a in ATTACKS):
        lines += ["", "privacy: MIA AUC (forget = members vs holdout; 0.5 = no signal) and PrivLeak in % (MUSE's sign: "
                  "< 0 still leaks, > 0 over-unlearned, 0 = as the retain model):"]
        lines += _aligned(["model", *(BY_KEY[k].label for k in PRIVACY_KEYS)],
                          [[label, *(_fmt(BY_KEY[k].value(res)) for k in PRIVACY_KEYS)]
                           for label, res in zip(labels, results, strict=True)])
    boot = [res.get("bootstrap") for res in results]
    if any(boot):
        b = next(x for x in boot if x)
        lines += ["", f"{b['level'] * 100:g} % bootstrap intervals ({b['method']}, {b['resamples']} resamples of the "
                  f"question rows, seed {b['seed']}):"]
        lines += _aligned(["model", *(BY_KEY[k].label for k in INTERVAL_KEYS)],
                          [[label, *(_interval((x or {}).get("intervals", {}).get(k)) for k in INTERVAL_KEYS)]
                           for label, x in zip(labels, boot, strict=True)])
    notes = {res[key].get("message") for res in results for key in ("forget_quality", "privleak")
             if (res.get(key) or {}).get("message")}
    return "\n".join(lines + sorted(notes))


def _interval(bounds: Sequence[float] | None) -> str:
    """A table cell ``[low, high]`` (n/a without an interval)."""
    return "n/a" if not bounds else f"[{_fmt(bounds[0], 3)}, {_fmt(bounds[1], 3)}]"


def _summary_row(result: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
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
        "privleak": BY_KEY["privleak"].value(result),
        "mia_min_k_auc": BY_KEY["mia_min_k"].value(result),
    }


def summarise(results: list[dict[str, Any]], cfg: Any, names: dict[str, str],
              methods: tuple[str, ...] = ("tv", "perta-grad", "perta-fisher")) -> dict[str, Any]:
    """Rows per model, and per method the best setting by forget quality and at utility >= 0.95 x target's.

    ``names`` maps a model path to its row name (``target``, ``retain``); others are named by method.
    """
    rows = [_summary_row(r, names) for r in results]
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


def _md(value: Any, digits: int = 4) -> str:
    """A cell of :func:`results_markdown`: as :func:`_fmt`, 3 significant digits below 1e-3."""
    return _fmt(value, digits, small=3)


# results.md's privacy columns (summary row key -> title), shown when some row has the value
_PRIVACY_TITLES = {"mia_min_k_auc": f"{BY_KEY['mia_min_k'].label}", "privleak": f"{BY_KEY['privleak'].label} (%)"}


def results_markdown(summary: dict[str, Any]) -> str:
    """The results table (markdown) and the best alphas."""
    steps = any(r.get("step_norm") is not None for r in summary["rows"])
    privacy = [k for k in ("mia_min_k_auc", "privleak") if any(r.get(k) is not None for r in summary["rows"])]
    head = ("| method | alpha / setting | " + ("step ‖αw⊙τ‖/‖τ‖ | " if steps else "")
            + "forget quality | log10 FQ | model utility | ES forget | ES retain | ROUGE forget | ROUGE retain |"
            + "".join(f" {_PRIVACY_TITLES[k]} |" for k in privacy) + "\n"
            + "|---" * ((10 if steps else 9) + len(privacy)) + "|\n")
    body = "".join(
        f"| {r['method']} | {_setting(r)} | " + (f"{_md(r.get('step_norm'), 2)} | " if steps else "")
        + f"{_md(r['forget_quality'])} | {_md(r['log10_forget_quality'], 2)} "
        f"| {_md(r['model_utility'])} | {_md(r['forget_extraction_strength'])} "
        f"| {_md(r['retain_extraction_strength'])} | {_md(r['forget_rouge'])} | {_md(r['retain_rouge'])} |"
        + "".join(f" {_md(r.get(k), 2 if k == 'privleak' else 4)} |" for k in privacy) + "\n"
        for r in summary["rows"])
    lines = ["", f"Target model utility: {_md(summary['target_model_utility'])}", ""]
    for method, best in summary["best"].items():
        a = best["best_forget_quality"]
        b = best["best_forget_quality_at_utility_95pct"]
        lines.append(f"- {method}: best forget quality at {_setting(a, True)} (FQ {_md(a['forget_quality'])}, "
                     f"MU {_md(a['model_utility'])}); at MU >= 0.95 x target: "
                     + (f"{_setting(b, True)} (FQ {_md(b['forget_quality'])}, MU {_md(b['model_utility'])})"
                        if b else "no setting keeps that much utility"))
    return head + body + "\n".join(lines) + "\n"


def _setting(row: dict[str, Any], named: bool = False) -> str:
    """``alpha`` of a task-arithmetic row, the ``lr=..,ep=..`` setting of a gradient one, else n/a."""
    if row.get("alpha") is not None:
        return f"alpha {_md(row['alpha'])}" if named else _md(row["alpha"])
    return str(row.get("setting") or "n/a")


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
    for key, name in CARD_METRICS:
        value = BY_KEY[key].value(results)
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
