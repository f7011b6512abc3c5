"""Bootstrap intervals of every aggregate of one evaluation, and the paired comparison of two.

What is resampled: the **question rows** of each split, with replacement, each split on its own (forget,
holdout, retain, real authors, world facts; a stratified bootstrap: every resample keeps each split's size).
One resample draws one list of row positions per split and recomputes every aggregate from the per-row values
the result JSON holds (``value_by_index``):

* a mean metric (probabilities, ROUGE-L recall, truth-ratio aggregates, extraction strength) is the mean over
  the drawn rows;
* model utility is the harmonic mean of its nine components, each recomputed on its split's drawn rows;
* forget quality is the KS test of the model's truth ratios on the drawn forget rows against the retain
  model's truth ratios **on the same drawn rows** (the reference is paired by question);
* an attack's AUC uses the drawn forget rows (members) and the drawn holdout rows (non-members); PrivLeak
  recomputes the retain model's AUC on the same drawn rows.

The interval is the percentile interval (``level`` = 0.95: the 2.5th and 97.5th percentiles of the
resampled values); the generator is ``numpy.random.default_rng(seed)``, drawing the splits in the order of
:data:`SPLITS`, so the same seed and row counts give the same draws. The paired comparison
(:func:`compare_results`) evaluates both models on the same draws and reports the interval of the difference.
The retain model's own sampling noise enters through its per-row values; the models themselves are fixed
(this is not a bootstrap over training seeds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.evaluation import metrics, privacy
from perta_hub.evaluation.metric_info import COMPARED, HIGHER, LOWER, METRICS, NEAR_ZERO, UTILITY_KEYS, metric

#: the resampled splits, in the order they are drawn
SPLITS = ("forget", "holdout", "retain", "ra", "wf")
#: the percentile interval's coverage
LEVEL = 0.95
#: what the JSON says was resampled
RESAMPLED = ("question rows of each split (forget, holdout, retain, real authors, world facts), with "
             "replacement, each split on its own; the retain model's per-row values on the same draws")
A_BEATS_B, B_BEATS_A, NO_DIFFERENCE = "A beats B", "B beats A", "no measurable difference"


def check_resamples(resamples: int) -> None:
    """Refuse a negative number of resamples (0: no intervals)."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
        raise InputError(f"--bootstrap must be a whole number >= 0 (resamples; 0: none), got {resamples!r}")


def _split_of(key: str) -> str:
    return "forget" if key == "extraction_strength" else key.split("_", 1)[0]


def row_value(key: str, value: Mapping[str, Any]) -> float:
    """One row's share of the mean aggregate ``key`` (its ``value_by_index`` entry in, a number out)."""
    if key.endswith("_PERT_Prob"):
        return metrics.mean(value["prob"])
    if key.endswith("_ROUGE"):
        return float(value["rougeL_recall"])
    if key == "forget_truth_ratio":
        return metrics.truth_ratio_forget_row(value["score"])
    if key.endswith("_Truth_Ratio"):
        return metrics.truth_ratio_retain_row(value["score"])
    return float(value["prob"] if "prob" in value else value["score"])


#: the aggregates that are means over one split's rows (their keys in the result, each with ``value_by_index``)
MEAN_KEYS = tuple(f"{split}_{name}" for split in ("forget", "retain", "ra", "wf") for name in (
    "Q_A_Prob", "Q_A_PERT_Prob", "Q_A_ROUGE", *(("Q_A_PARA_Prob",) if split in ("forget", "retain") else
                                                 ("Q_A_Prob_normalised",)))) + (
    "forget_truth_ratio", "retain_Truth_Ratio", "ra_Truth_Ratio", "wf_Truth_Ratio", "extraction_strength",
    "retain_extraction_strength")
#: the PrivLeak metrics (metric keys of :mod:`perta_hub.evaluation.metric_info`) -> their attack
PRIVLEAKS = {m.key: (privacy.HEADLINE_ATTACK if m.key == "privleak" else m.result_key)
             for m in METRICS if m.key.startswith("privleak")}
#: every aggregate with an interval: the means, forget quality, model utility, the AUCs, the PrivLeaks
INTERVAL_KEYS = (*MEAN_KEYS, "forget_quality", "model_utility", *privacy.ATTACKS, *PRIVLEAKS)


def point_value(result: Mapping[str, Any], key: str) -> Any:
    """The evaluation's own value of an :data:`INTERVAL_KEYS` aggregate (None when it has none)."""
    if key in PRIVLEAKS:
        return metric(key).value(result)
    return (result.get(key) or {}).get("agg_value")


@dataclass
class RowTable:
    """The per-row values of one evaluation, as arrays in row order (numpy ``float64``).

    Attributes:
        rows: split -> row indices (strings, ascending) that the arrays follow.
        means: mean-aggregate key -> per-row values ``[n_split]``.
        mia: attack -> ``(forget scores [n_forget], holdout scores [n_holdout])``.
        ref_tr: the retain model's forget truth ratios on the forget rows, or None.
        ref_mia: attack -> the retain model's ``(forget, holdout)`` scores on the same rows.
        model_tr: the model's forget truth ratios ``[n_forget]``.
        notes: metric key -> why it has no interval.
    """

    rows: dict[str, list[str]]
    means: dict[str, Any]
    mia: dict[str, tuple[Any, Any]]
    model_tr: Any
    ref_tr: Any = None
    ref_mia: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {s: len(r) for s, r in self.rows.items()}


def _ordered(by_index: Mapping[str, Any]) -> list[str]:
    return sorted(by_index, key=int)


def row_table(result: Mapping[str, Any]) -> RowTable:
    """The :class:`RowTable` of one evaluation's result dict (as :func:`evaluate_tofu` returns or the JSON holds).

    Raises:
        InputError: a result without per-row values (not written by ``perta-hub evaluate``).
    """
    import numpy as np

    try:
        rows = {s: _ordered(result[k]["value_by_index"]) for s, k in (
            ("forget", "forget_Q_A_Prob"), ("retain", "retain_Q_A_Prob"), ("ra", "ra_Q_A_Prob"),
            ("wf", "wf_Q_A_Prob"))}
        rows["holdout"] = _ordered(result["mia_loss"]["holdout"]["value_by_index"])
        means = {k: np.array([row_value(k, result[k]["value_by_index"][i]) for i in rows[_split_of(k)]])
                 for k in MEAN_KEYS}
        mia = {a: tuple(np.array([result[a][side]["value_by_index"][i]["score"] for i in rows[side]])
                        for side in ("forget", "holdout")) for a in privacy.ATTACKS}
        model_tr = np.array([result["forget_truth_ratio"]["value_by_index"][i]["score"] for i in rows["forget"]])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"the result lacks per-row values ({type(err).__name__}: {err}); pass the JSON written by "
                         "this version of `perta-hub evaluate`") from err
    table = RowTable(rows, means, mia, model_tr)  # type: ignore[arg-type]
    ref = result.get("reference") or {}
    ref_tr = ref.get("forget_truth_ratio") or {}
    if result.get("forget_quality", {}).get("agg_value") is None:
        table.notes["forget_quality"] = "no retain-model reference"
    elif set(ref_tr) != set(rows["forget"]):
        table.notes["forget_quality"] = "the retain model's truth ratios do not cover every forget row"
    else:
        table.ref_tr = np.array([ref_tr[i] for i in rows["forget"]])
    for attack, sides in (ref.get("mia") or {}).items():
        if all(set(sides[s]) == set(rows[s]) for s in ("forget", "holdout")):
            table.ref_mia[attack] = tuple(np.array([sides[s][i] for i in rows[s]]) for s in ("forget", "holdout"))
    for key, attack in PRIVLEAKS.items():
        if attack not in table.ref_mia:
            table.notes[key] = "no per-row MIA scores of the retain model on the same rows"
    return table


def draw(sizes: Mapping[str, int], resamples: int, seed: int) -> dict[str, Any]:
    """Row positions of ``resamples`` bootstrap resamples: split -> int array ``[resamples, n_split]``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, sizes[s], size=(resamples, sizes[s])) for s in SPLITS}


def aggregates(table: RowTable, idx: Mapping[str, Any]) -> dict[str, Any]:
    """Every aggregate recomputed on the drawn rows ``idx`` (split -> ``[B, n_split]``): key -> array ``[B]``.

    With ``idx`` the identity (one row of ``arange(n)`` per split) this gives back the evaluation's own values.
    """
    import numpy as np

    out: dict[str, Any] = {k: v[idx[_split_of(k)]].mean(axis=1) for k, v in table.means.items()}
    out["model_utility"] = np.array([metrics.model_utility(list(parts))
                                     for parts in np.stack([out[k] for k in UTILITY_KEYS], axis=1)])
    f, h = idx["forget"], idx["holdout"]
    if table.ref_tr is not None:
        out["forget_quality"] = np.array([metrics.forget_quality(table.model_tr[i], table.ref_tr[i]) for i in f])
    for attack, (members, nonmembers) in table.mia.items():
        out[attack] = np.atleast_1d(privacy.auc(members[f], nonmembers[h]))
    for key, attack in PRIVLEAKS.items():
        if key not in table.notes:
            ref_members, ref_nonmembers = table.ref_mia[attack]
            out[key] = privacy.privleak(out[attack], np.atleast_1d(privacy.auc(ref_members[f], ref_nonmembers[h])))
    return out


def percentile_interval(values: Any, level: float = LEVEL) -> list[float]:
    """``[low, high]``: the ``(1-level)/2`` and ``(1+level)/2`` percentiles of ``values``."""
    import numpy as np

    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(result: Mapping[str, Any], *, resamples: int, seed: int = 0,
                        level: float = LEVEL) -> dict[str, Any]:
    """The ``bootstrap`` entry of a result: a percentile interval for every aggregate (:data:`INTERVAL_KEYS`).

    Returns:
        ``{"resamples", "seed", "level", "method": "percentile", "resampled", "intervals": {key: [low, high]},
        "omitted": {key: why}}``.
    """
    check_resamples(resamples)
    if resamples < 1:
        raise InputError("bootstrap intervals need at least one resample")
    table = row_table(result)
    values = aggregates(table, draw(table.sizes(), resamples, seed))
    return {"resamples": resamples, "seed": seed, "level": level, "method": "percentile", "resampled": RESAMPLED,
            "intervals": {k: percentile_interval(values[k], level) for k in INTERVAL_KEYS if k in values},
            "omitted": dict(table.notes)}


def load_result(path: str | Path) -> dict[str, Any]:
    """One evaluation's result from a JSON written by ``perta-hub evaluate -o`` (a single model).

    Raises:
        InputError: a missing or non-JSON file, a file of several models, or one without per-row values.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p} does not exist; pass a results JSON written by `perta-hub evaluate -o`")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{p} is not JSON ({err}); pass a results JSON written by `perta-hub evaluate -o`") from err
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        raise InputError(f"{p} holds {len(data['models'])} models; evaluate each model with its own -o to compare")
    if not isinstance(data, dict) or "meta" not in data:
        raise InputError(f"{p} is not one model's `perta-hub evaluate` results")
    row_table(data)  # per-row values present
    return data


def _verdict(interval: list[float]) -> str:
    if interval[0] > 0:
        return A_BEATS_B
    if interval[1] < 0:
        return B_BEATS_A
    return NO_DIFFERENCE


def compare_results(a: Mapping[str, Any], b: Mapping[str, Any], *, resamples: int = 1000, seed: int = 0,
                    level: float = LEVEL) -> dict[str, Any]:
    """Paired bootstrap comparison of two evaluations on the same rows (A and B), for :data:`COMPARED`.

    Both results are recomputed on the same drawn rows; per metric: A's and B's values, ``difference`` = A - B
    with its percentile interval, ``advantage`` (how much better A is: A - B for "higher", B - A for "lower",
    ``|B| - |A|`` for "closer to 0") with its interval, and the verdict: "A beats B" when the advantage's
    interval lies above 0, "B beats A" below 0, else "no measurable difference".

    Raises:
        InputError: different forget splits or rows, different retain-model references, or no resamples.
    """
    check_resamples(resamples)
    if resamples < 1:
        raise InputError("--bootstrap: the comparison needs at least one resample")
    meta_a, meta_b = a.get("meta", {}), b.get("meta", {})
    if meta_a.get("forget_split") != meta_b.get("forget_split"):
        raise InputError(f"A was evaluated on {meta_a.get('forget_split')}, B on {meta_b.get('forget_split')}; "
                         "compare evaluations of the same forget split")
    ta, tb = row_table(a), row_table(b)
    if ta.rows != tb.rows:
        diff = [s for s in SPLITS if ta.rows[s] != tb.rows[s]]
        raise InputError(f"A and B were evaluated on different rows of {', '.join(diff)}; evaluate both with the "
                         "same --max-examples")
    ref_a, ref_b = ({k: v for k, v in (r.get("reference") or {}).items() if k != "source"} for r in (a, b))
    if ref_a and ref_b and ref_a != ref_b:
        raise InputError("A and B were scored against different retain-model references; evaluate both with the "
                         "same --retain-logs")
    idx = draw(ta.sizes(), resamples, seed)
    va, vb = aggregates(ta, idx), aggregates(tb, idx)
    out: dict[str, Any] = {}
    for key in COMPARED:
        info = metric(key)
        point_a, point_b = info.value(a), info.value(b)
        if key not in va or key not in vb or point_a is None or point_b is None:
            why = ta.notes.get(key) or tb.notes.get(key) or "not computed"
            out[key] = {"a": point_a, "b": point_b, "verdict": None, "omitted": why}
            continue
        advantage = percentile_interval(info.advantage(va[key], vb[key]), level)
        out[key] = {"label": info.label, "better": info.better, "a": point_a, "b": point_b,
                    "difference": point_a - point_b,
                    "interval": percentile_interval(va[key] - vb[key], level),
                    "advantage": float(info.advantage(point_a, point_b)), "advantage_interval": advantage,
                    "verdict": _verdict(advantage)}
    return {"a": meta_a.get("label") or meta_a.get("model"), "b": meta_b.get("label") or meta_b.get("model"),
            "forget_split": meta_a.get("forget_split"), "resamples": resamples, "seed": seed, "level": level,
            "method": "paired percentile bootstrap", "resampled": RESAMPLED, "metrics": out}


def comparison_text(comparison: Mapping[str, Any]) -> str:
    """The comparison as lines: A and B, then per metric the difference, its interval and the verdict."""
    pct = f"{comparison['level'] * 100:g} %"
    lines = [f"A: {comparison['a']}", f"B: {comparison['b']}",
             f"TOFU {comparison['forget_split']}, paired bootstrap over question rows, {comparison['resamples']} "
             f"resamples (seed {comparison['seed']}), {pct} percentile intervals:"]
    for key, c in comparison["metrics"].items():
        label = metric(key).label
        if c.get("verdict") is None:
            lines.append(f"  {label}: not compared ({c.get('omitted')})")
            continue
        direction = c["better"].split(" (")[0]
        how = {HIGHER: "higher is better", LOWER: "lower is better", NEAR_ZERO: "closer to 0 is better"}[direction]
        extra = "" if direction == HIGHER else (
            f"; advantage of A ({'B - A' if direction == LOWER else '|B| - |A|'}) {c['advantage']:.4g} "
            f"[{c['advantage_interval'][0]:.4g}, {c['advantage_interval'][1]:.4g}]")
        lines.append(f"  {label} ({how}): A {c['a']:.4g}, B {c['b']:.4g}, A - B {c['difference']:.4g} "
                     f"[{c['interval'][0]:.4g}, {c['interval'][1]:.4g}]{extra} -> {c['verdict']}")
    return "\n".join(lines)


def compare_files(a: str | Path, b: str | Path, *, bootstrap: int = 1000, seed: int = 0,
                  output: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """What ``perta-hub compare A.json B.json`` does: :func:`compare_results` of two results JSONs (written by
    ``perta-hub evaluate -o``), optionally saved as JSON.

    Returns:
        ``{"comparison": compare_results' dict, "text": comparison_text, "output": Path | None}``.
    """
    from perta_hub.evaluation.outputs import check_outputs, save_results
    from perta_hub.options.compare import CompareOptions

    CompareOptions(bootstrap=bootstrap, seed=seed, output=None if output is None else str(output))
    check_outputs([("-o", output)], inputs=[a, b], overwrite=overwrite)
    comparison = compare_results(load_result(a), load_result(b), resamples=bootstrap, seed=seed)
    comparison["files"] = {"a": str(a), "b": str(b)}
    path = save_results(comparison, output) if output is not None else None
    return {"comparison": comparison, "text": comparison_text(comparison), "output": path}
