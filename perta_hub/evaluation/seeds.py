"""The spread of an experiment over its seeds (``perta-hub run --seeds K``), and the answer it gives.

Input: the per-seed summaries (:func:`perta_hub.evaluation.report.summarise`, each seed's ``results.json``) and,
where they are at hand, each seed's per-question evaluation results (model path -> the result dict ``perta-hub
evaluate`` writes, with ``value_by_index``). Output (:func:`seed_spread`, the ``spread`` of the gathered
``results.json``):

* per method, its **front**: per setting (the step norm ``apply --step`` asked for; else the gradient baselines'
  ``lr=..,ep=..``; else alpha), forget quality, log10 of it, model utility and PrivLeak (the headline attack's,
  metric key ``privleak``) as mean, sample sd, median, min and max over the seeds;
* per method, its **best setting within the utility budget** in each seed (``summary["best"][m]
  ["within_budget"]``) and the same statistics of that point's numbers over the seeds that have one;
* **paired comparisons** of every PerTA method (a name starting with ``perta``) against ``tv`` and the gradient
  baselines present (``ga``, ``gd``, ``npo``): per seed the differences of the two best points, the paired
  bootstrap of :func:`perta_hub.evaluation.bootstrap.compare_results` where both points' per-question results are
  at hand, a verdict by :data:`RULE`, and one sentence per pair;
* **at matched step norm** (:func:`matched_steps`): every PerTA method against ``tv`` at each step norm both ran
  (``apply --step``), the differences per seed (utility, forget quality in KS ladder steps, PrivLeak, the retain
  extraction strength) and their statistics: the same size of update, so what differs is where it goes.

Forget quality is a p-value on a ladder (n forget questions: the KS statistic is a multiple of 1/n): the mean of
p-values is dominated by the largest, so the median and the mean of log10 are given beside it, and a difference
of one ladder step (:func:`perta_hub.evaluation.report.ks_ladder`) is a tie.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from perta_hub.evaluation.document import Block, Bullets, Heading, Paragraph, Table, to_markdown
from perta_hub.evaluation.metric_info import metric
from perta_hub.unlearning.methods import METHOD_NAMES
from perta_hub.unlearning.methods import METHODS as UNLEARN_CODES

#: the numbers whose spread is given (summary-row keys of :data:`perta_hub.evaluation.metric_info.METRICS`)
SPREAD_KEYS = ("forget_quality", "log10_forget_quality", "model_utility", "privleak")
#: the differences compared at a matched step norm (:func:`matched_steps`; forget quality as KS ladder steps)
STEP_KEYS = ("model_utility", "forget_quality", "privleak", "retain_extraction_strength")
#: the gradient baselines PerTA is compared with (``unlearn``'s methods), after task-vector negation (``tv``)
GRADIENT_BASELINES = UNLEARN_CODES
BASELINES = ("tv", *GRADIENT_BASELINES)
#: how the answers name the methods
DISPLAY = {"tv": "TV", **METHOD_NAMES}
#: paired-bootstrap resamples per comparison, and its generator's seed
RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: a seed's verdict: the first method wins, the second wins, neither by more than the noise
A_WINS, B_WINS, TIE = "a", "b", "tie"
#: a difference of at most this many steps of the KS ladder is a tie
TIE_STEPS = 1
RULE = ("In each seed, each method's point is its best setting within the utility budget (so utility is matched "
        "by the budget). A beats B in a seed when A's forget quality is more than one step of the KS ladder above "
        "B's (a difference of one step, one question's place in the KS statistic, is a tie) **and**, where both "
        "points' per-question results are at hand, the 95 % paired bootstrap interval of A's forget-quality "
        "advantage (question rows resampled, both models on the same draws) lies above 0; B beats A likewise; "
        "otherwise there is no measurable difference. A method with a point within the budget beats one without. "
        "The answer is yes when A wins in every seed compared, no when B does, \"no measurable difference\" when "
        "no seed has a winner, mixed otherwise. Counting seeds is descriptive, not a test: two equal methods "
        "split by chance win all K of K seeds with probability 0.5^K.")
#: what ``perta-hub run --seeds`` re-seeds, when the caller does not say step by step (docs/recipes.md "Seeds")
SEEDING = ("**Re-seeded**: the data order of the forget fine-tune (`task-vector` with `forget`), the gradient "
           "baselines' data order (`unlearn`), a weight map's retain subsample (`compute-weights` with "
           "`retain-fraction` / `max-examples`) and steps marked `seeded: true`; every step using their outputs "
           "(apply sweeps, tune, evaluations, the report) runs once per seed, unchanged. **Not re-seeded** (run "
           "once, the same in every seed): the target and retain fine-tunes, `tiny-model`, a weight map over all its "
           "retain rows, and the evaluation itself (greedy answers: the same model gives the same numbers).")


def display(method: str) -> str:
    """``PerTA-fisher``, ``TV``, ``GradAscent``: a method label as the answers write it."""
    if method.startswith("perta"):
        return "PerTA" + method[len("perta"):]
    return DISPLAY.get(method, method)


def stats(values: Sequence[float | None]) -> dict[str, Any] | None:
    """``{n, mean, sd, median, min, max}`` of the values that are not None (``sd``: the sample standard deviation,
    n - 1 in the denominator, None for one value); None when no value is there."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {"n": len(present), "mean": statistics.fmean(present),
            "sd": statistics.stdev(present) if len(present) > 1 else None, "median": statistics.median(present),
            "min": min(present), "max": max(present)}


def log10_fq(row: Mapping[str, Any]) -> float | None:
    """log10 of a row's forget quality (its ``log10_forget_quality``, else computed; None without a positive FQ)."""
    if row.get("log10_forget_quality") is not None:
        return float(row["log10_forget_quality"])
    fq = row.get("forget_quality")
    return math.log10(fq) if fq else None


def value(row: Mapping[str, Any], key: str) -> float | None:
    """A row's number for a :data:`SPREAD_KEYS` key."""
    return log10_fq(row) if key == "log10_forget_quality" else row.get(key)


def setting_of(row: Mapping[str, Any]) -> tuple[tuple[str, Any], str]:
    """The key that matches a row with its counterparts in the other seeds, and its label: the step norm ``apply
    --step`` asked for (``step 1.5``), else the setting (``lr=0.0001,ep=1``), else alpha (``alpha 2``: an alpha
    sweep, whose measured step norm differs from seed to seed), else the model's path."""
    if row.get("step") is not None:
        return ("step", float(row["step"])), f"step {float(row['step']):g}"
    if row.get("setting"):
        return ("setting", str(row["setting"])), str(row["setting"])
    if row.get("alpha") is not None:
        return ("alpha", float(row["alpha"])), f"alpha {float(row['alpha']):g}"
    return ("model", str(row["model"])), str(row["model"])


def _order(key: tuple[str, Any]) -> tuple[str, float, str]:
    kind, v = key
    return (kind, v, "") if isinstance(v, float) else (kind, 0.0, str(v))


def _methods(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The compared methods (``best``'s keys) of every seed, first seen first."""
    return list(dict.fromkeys(m for s in summaries for m in s.get("best", {})))


def _spread_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {key: stats([value(r, key) for r in rows]) for key in SPREAD_KEYS}


def fronts(summaries: Mapping[Any, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, per setting (:func:`setting_of`, in order): ``setting``, ``seeds`` (how many seeds have it),
    ``step_norm`` (the measured ``||alpha w ⊙ tau|| / ||tau||``, its statistics; None without one) and the
    statistics of :data:`SPREAD_KEYS` over the seeds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for method in _methods(list(summaries.values())):
        groups: dict[tuple[str, Any], tuple[str, list[Mapping[str, Any]]]] = {}
        for summary in summaries.values():
            for row in summary["rows"]:
                if row["method"] == method:
                    key, label = setting_of(row)
                    groups.setdefault(key, (label, []))[1].append(row)
        out[method] = [{"setting": label, "seeds": len(rows), "step_norm": stats([r.get("step_norm") for r in rows]),
                        **_spread_of(rows)}
                       for key, (label, rows) in sorted(groups.items(), key=lambda kv: _order(kv[0]))]
    return out


def best_within_budget(summaries: Mapping[Any, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: ``seeds`` (how many seeds ran it), ``within_budget`` (how many had a setting within the utility
    budget), ``settings`` (seed -> the setting chosen, None without one) and the statistics of :data:`SPREAD_KEYS`
    of the chosen points over the seeds that have one."""
    out = {}
    for method in _methods(list(summaries.values())):
        chosen = {seed: (s["best"][method] or {}).get("within_budget") for seed, s in summaries.items()
                  if method in s.get("best", {})}
        kept = [row for row in chosen.values() if row is not None]
        out[method] = {"seeds": len(chosen), "within_budget": len(kept),
                       "settings": {str(seed): setting_of(row)[1] if row else None for seed, row in chosen.items()},
                       **_spread_of(kept)}
    return out


@lru_cache(maxsize=8)
def _ladder(n: int) -> tuple[float, ...]:
    from perta_hub.evaluation.report import ks_ladder

    with warnings.catch_warnings():  # scipy falls back to the asymptotic p-value for large n, and says so
        warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(ks_ladder(n, floor=0.0))


def ladder_position(fq: float, n: int) -> int:
    """The index of ``fq`` on the KS ladder of ``n`` forget questions (every value forget quality can take,
    ascending): the nearest rung on a log scale."""
    rungs = _ladder(n)
    tiny = 1e-300
    return min(range(len(rungs)), key=lambda i: abs(math.log10(max(rungs[i], tiny)) - math.log10(max(fq, tiny))))


def ladder_steps(a: float, b: float, n: int | None) -> int | None:
    """How many steps of the KS ladder of ``n`` questions ``a`` lies above ``b`` (negative: below); None without
    ``n``."""
    if not n:
        return None
    return ladder_position(a, n) - ladder_position(b, n)


def _forget_rows(summary: Mapping[str, Any]) -> int | None:
    return ((summary.get("evaluation") or {}).get("rows") or {}).get("forget")


def _point(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"model": row["model"], "setting": setting_of(row)[1], "forget_quality": row.get("forget_quality"),
            "log10_forget_quality": log10_fq(row), "model_utility": row.get("model_utility"),
            "privleak": row.get("privleak")}


def _difference(a: Mapping[str, Any], b: Mapping[str, Any], keys: Sequence[str] = SPREAD_KEYS
                ) -> dict[str, float | None]:
    """``a[k] - b[k]`` per key (None where either is missing)."""
    return {k: None if a.get(k) is None or b.get(k) is None else a[k] - b[k] for k in keys}


def _fq_steps(a: Mapping[str, Any], b: Mapping[str, Any], n: int | None) -> int | None:
    """A's forget quality minus B's in KS ladder steps (None without both or without a ladder)."""
    if a.get("forget_quality") is None or b.get("forget_quality") is None:
        return None
    return ladder_steps(a["forget_quality"], b["forget_quality"], n)


def seed_verdict(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, n: int | None,
                 bootstrap: Mapping[str, Any] | None = None) -> tuple[str | None, str]:
    """One seed's verdict by :data:`RULE` on the two best points within the budget (summary rows, None where a
    method has none), the forget questions ``n`` and, when at hand, the paired bootstrap
    (:func:`perta_hub.evaluation.bootstrap.compare_results`' ``metrics``): (:data:`A_WINS` | :data:`B_WINS` |
    :data:`TIE` | None when not compared, why)."""
    if a is None and b is None:
        return None, "neither has a setting within the budget"
    if b is None:
        return A_WINS, "only A has a setting within the budget"
    if a is None:
        return B_WINS, "only B has a setting within the budget"
    fa, fb = a.get("forget_quality"), b.get("forget_quality")
    if fa is None or fb is None:
        return None, "no forget quality (no retain-model reference)"
    steps = ladder_steps(fa, fb, n)
    if steps is None:
        steps = (fa > fb) - (fa < fb)
        apart = steps != 0
        where = "the forget qualities differ"
    else:
        apart = abs(steps) > TIE_STEPS
        where = f"{abs(steps)} ladder step{'' if abs(steps) == 1 else 's'} apart"
    if not apart:
        return TIE, where
    fq = (bootstrap or {}).get("forget_quality") or {}
    if fq.get("verdict") is not None:
        agrees = (fq["advantage_interval"][0] > 0) if steps > 0 else (fq["advantage_interval"][1] < 0)
        if not agrees:
            return TIE, f"{where}, but the paired bootstrap interval of the FQ advantage includes 0"
        where += ", bootstrap interval excludes 0"
    return (A_WINS if steps > 0 else B_WINS), where


def compare_seed(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, n: int | None,
                 results: Mapping[str, Mapping[str, Any]] | None, *, resamples: int = RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """One seed's comparison of two best points (summary rows or None): the points, their differences (A - B;
    ``abs_privleak``: |PrivLeak A| - |PrivLeak B|, < 0 when A is closer to 0), the ladder steps, the paired
    bootstrap when ``results`` (model path -> evaluation result) holds both models, and the verdict."""
    from perta_hub.errors import PertaError
    from perta_hub.evaluation.bootstrap import compare_results

    out: dict[str, Any] = {"a": _point(a), "b": _point(b), "difference": None, "ladder_steps": None,
                           "bootstrap": None, "bootstrap_note": None}
    boot = None
    if a is not None and b is not None:
        diff = out["difference"] = _difference(out["a"], out["b"])
        diff["abs_privleak"] = None if diff["privleak"] is None else abs(a["privleak"]) - abs(b["privleak"])
        out["ladder_steps"] = _fq_steps(a, b, n)
        ra, rb = ((results or {}).get(str(r["model"])) for r in (a, b))
        if ra is None or rb is None:
            out["bootstrap_note"] = "the per-question results of both points are not at hand"
        else:
            try:
                boot = compare_results(ra, rb, resamples=resamples, seed=seed)["metrics"]
            except PertaError as err:
                out["bootstrap_note"] = str(err)
            else:
                out["bootstrap"] = {k: {f: c.get(f) for f in ("difference", "interval", "advantage",
                                                              "advantage_interval", "verdict", "omitted")}
                                    for k, c in boot.items()}
                out["bootstrap"]["resamples"], out["bootstrap"]["seed"] = resamples, seed
    out["verdict"], out["why"] = seed_verdict(a, b, n, boot)
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    s = stats(values)
    return None if s is None else s["mean"]


def answer(a: str, b: str, per_seed: Sequence[Mapping[str, Any]]) -> str:
    """The plain-English answer for one pair from its per-seed comparisons (:data:`RULE`)."""
    name_a, name_b = display(a), display(b)
    total = len(per_seed)
    verdicts = [c["verdict"] for c in per_seed]
    wins, losses, ties = (verdicts.count(v) for v in (A_WINS, B_WINS, TIE))
    compared = wins + losses + ties
    skipped = total - compared
    if compared == 0:
        why = "; ".join(dict.fromkeys(c["why"] for c in per_seed))
        return f"**Not compared**: {name_a} against {name_b} in none of the {total} seeds ({why})."
    if wins == compared:
        head = f"**Yes**: {name_a} beats {name_b} by more than the noise in {wins} of {total} seeds"
    elif losses == compared:
        head = f"**No**: {name_b} beats {name_a} by more than the noise in {losses} of {total} seeds"
    elif ties == compared:
        head = (f"**No measurable difference**: neither {name_a} nor {name_b} beats the other by more than the "
                f"noise in any of the {total} seeds")
    else:
        counts = [f"{name_a} beats {name_b} by more than the noise in {wins} of {total} seeds",
                  f"{name_b} beats {name_a} in {losses}", f"no measurable difference in {ties}"]
        head = "**Mixed**: " + ", ".join(c for c, k in zip(counts, (wins, losses, ties), strict=True) if k)
    alone = [(name, sum(c["why"] == f"only {side} has a setting within the budget" for c in per_seed))
             for name, side in ((name_a, "A"), (name_b, "B"))]
    head += "".join(f" (in {k} only {name} keeps the budget)" for name, k in alone if k)
    diffs = [c["difference"] for c in per_seed if c["difference"]]
    fq = stats([d["forget_quality"] for d in diffs])
    parts = []
    if fq:
        parts.append(f"mean ΔFQ {_num(fq['mean'], 'forget_quality')}, median {_num(fq['median'], 'forget_quality')}")
        log10 = _mean([d["log10_forget_quality"] for d in diffs])
        parts.append(f"mean Δlog10 FQ {_num(log10, 'log10_forget_quality')}")
        steps = _mean([c["ladder_steps"] for c in per_seed if c["difference"]])
        if steps is not None:
            parts.append(f"mean {steps:+.1f} ladder steps")
        parts.append(f"mean ΔMU {_num(_mean([d['model_utility'] for d in diffs]), 'model_utility')}")
    leak = [(c["a"]["privleak"], c["b"]["privleak"]) for c in per_seed if c["difference"]
            and c["a"]["privleak"] is not None and c["b"]["privleak"] is not None]
    if leak:
        parts.append(f"PrivLeak there {name_a} {_num(_mean([x for x, _ in leak]), 'privleak')} %, {name_b} "
                     f"{_num(_mean([y for _, y in leak]), 'privleak')} % (means; closer to 0 is better)")
    text = head + "."
    if parts:
        text += (f" Over the {len(diffs)} seed{'' if len(diffs) == 1 else 's'} where both keep the budget, "
                 f"{name_a} - {name_b}: " + "; ".join(parts) + ".")
    if skipped:
        text += f" Not compared in {skipped}: " + "; ".join(dict.fromkeys(
            c["why"] for c in per_seed if c["verdict"] is None)) + "."
    return text


def seed_spread(summaries: Mapping[Any, Mapping[str, Any]],
                results: Mapping[Any, Mapping[str, Mapping[str, Any]]] | None = None, *,
                seeding: Mapping[str, Sequence[str]] | None = None, resamples: int = RESAMPLES,
                bootstrap_seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """The spread over the seeds of per-seed summaries (seed -> :func:`~perta_hub.evaluation.report.summarise`'s
    dict, at least two).

    Args:
        results: seed -> model path -> its evaluation result (with per-question values), for the paired bootstrap
            of each pair's best points (seeds or models left out: compared without it).
        seeding: what the run re-seeded, step names by ``re-seeded``, ``per seed`` (run once per seed, unchanged)
            and ``once`` (not re-seeded); None: the general statement :data:`SEEDING`.
        resamples, bootstrap_seed: of each paired bootstrap.

    Returns:
        ``{"seeds", "forget_rows", "utility_budget", "seeding", "rule", "fronts" (:func:`fronts`),
        "best" (:func:`best_within_budget`), "comparisons": [{"a", "b", "per_seed": [{"seed", ...
        (:func:`compare_seed`)}], "wins", "losses", "ties", "answer"}], "matched_steps" (:func:`matched_steps`)}``.
    """
    seeds = list(summaries)
    first = summaries[seeds[0]]
    n = _forget_rows(first)
    methods = _methods(list(summaries.values()))
    perta = [m for m in methods if m.startswith("perta")]
    others = [m for m in BASELINES if m in methods]
    comparisons = []
    for a in perta:
        for b in others:
            per_seed = []
            for seed, summary in summaries.items():
                best = summary.get("best", {})
                if a not in best or b not in best:
                    continue
                c = compare_seed(best[a]["within_budget"], best[b]["within_budget"], _forget_rows(summary),
                                 (results or {}).get(seed), resamples=resamples, seed=bootstrap_seed)
                per_seed.append({"seed": seed, **c})
            verdicts = [c["verdict"] for c in per_seed]
            comparisons.append({"a": a, "b": b, "per_seed": per_seed, "wins": verdicts.count(A_WINS),
                                "losses": verdicts.count(B_WINS), "ties": verdicts.count(TIE),
                                "answer": answer(a, b, per_seed)})
    return {"seeds": seeds, "forget_rows": n, "utility_budget": first.get("utility_budget"),
            "seeding": {k: list(v) for k, v in seeding.items()} if seeding is not None else None, "rule": RULE,
            "fronts": fronts(summaries), "best": best_within_budget(summaries), "comparisons": comparisons,
            "matched_steps": matched_steps(summaries)}


def matched_steps(summaries: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every PerTA method against ``tv`` at each step norm ``||alpha w ⊙ tau|| / ||tau||`` both ran in a seed.

    Returns:
        one dict per (method, step) in order: ``method``, ``step`` (the norm asked for), ``seeds`` (how many seeds
        have both), ``ladder_steps`` (per seed, the method's forget quality minus TV's in KS ladder steps; None
        without a ladder), ``higher_utility`` (seeds where the method's model utility is above TV's) and, per
        :data:`STEP_KEYS` key, the statistics of the differences (method - TV) over those seeds.
    """
    out = []
    for method in [m for m in _methods(list(summaries.values())) if m.startswith("perta")]:
        pairs: dict[float, list[tuple[Mapping[str, Any], Mapping[str, Any], int | None]]] = {}
        for summary in summaries.values():
            tv = {float(r["step"]): r for r in summary["rows"] if r["method"] == "tv" and r.get("step") is not None}
            for row in summary["rows"]:
                step = row.get("step")
                if row["method"] == method and step is not None and float(step) in tv:
                    pairs.setdefault(float(step), []).append((row, tv[float(step)], _forget_rows(summary)))
        for step in sorted(pairs):
            both = pairs[step]
            per_seed = [_difference(a, b, STEP_KEYS) for a, b, _ in both]
            diffs = {key: stats([d[key] for d in per_seed]) for key in STEP_KEYS}
            ladder = [_fq_steps(a, b, n) for a, b, n in both]
            higher = sum(1 for d in per_seed if d["model_utility"] is not None and d["model_utility"] > 0)
            out.append({"method": method, "step": step, "seeds": len(both), "ladder_steps": ladder,
                        "higher_utility": higher, **diffs})
    return out


# -- the cross-seed section of the gathered results.md -----------------------------------------------------------
def _num(v: float | None, key: str) -> str:
    from perta_hub.evaluation.report import _fmt

    return _fmt(None if v is None else float(v), metric(key).digits)


def _cell(s: Mapping[str, Any] | None, key: str) -> str:
    """``mean ± sd [min, max]`` (one value: just it)."""
    if s is None:
        return "n/a"
    if s["n"] == 1:
        return _num(s["mean"], key)
    return f"{_num(s['mean'], key)} ± {_num(s['sd'], key)} [{_num(s['min'], key)}, {_num(s['max'], key)}]"


def seeding_text(seeding: Mapping[str, Sequence[str]] | None) -> str:
    """What the run re-seeded and what it did not, in one paragraph."""
    if seeding is None:
        return SEEDING

    def names(key: str) -> str:
        return ", ".join(f"`{s}`" for s in seeding.get(key, ())) or "none"

    return (f"**Re-seeded** (their `seed` set to each seed): {names('re-seeded')}. **Run once per seed, "
            f"unchanged** (they use a re-seeded output): {names('per seed')}. **Not re-seeded** (run once, the same "
            f"in every seed): {names('once')}, and the evaluation itself (greedy answers: the same model gives the "
            "same numbers). The spread below is the spread due to the re-seeded steps only; the target, the retain "
            "model (the reference of forget quality and PrivLeak) and the evaluated rows are the same in every seed.")


def _front_table(front: Sequence[Mapping[str, Any]]) -> Table:
    rows = tuple((f["setting"], str(f["seeds"]), _cell(f["step_norm"], "model_utility") if f["step_norm"] else "n/a",
                  _cell(f["forget_quality"], "forget_quality"),
                  _num((f["forget_quality"] or {}).get("median"), "forget_quality"),
                  _num((f["log10_forget_quality"] or {}).get("mean"), "log10_forget_quality"),
                  _cell(f["model_utility"], "model_utility"), _cell(f["privleak"], "privleak")) for f in front)
    return Table(("setting", "seeds", "step norm", "forget quality", "FQ median", "mean log10 FQ", "model utility",
                  metric("privleak").label), rows)


def _best_table(best: Mapping[str, Mapping[str, Any]]) -> Table:
    rows = []
    for method, b in best.items():
        chosen = ", ".join(f"{seed}: {s or 'none'}" for seed, s in b["settings"].items())
        rows.append((method, f"{b['within_budget']} of {b['seeds']}", chosen,
                     _cell(b["forget_quality"], "forget_quality"),
                     _num((b["forget_quality"] or {}).get("median"), "forget_quality"),
                     _num((b["log10_forget_quality"] or {}).get("mean"), "log10_forget_quality"),
                     _cell(b["model_utility"], "model_utility"), _cell(b["privleak"], "privleak")))
    return Table(("method", "seeds within the budget", "setting chosen (seed: setting)", "forget quality",
                  "FQ median", "mean log10 FQ", "model utility", metric("privleak").label), tuple(rows))


def _interval(c: Mapping[str, Any]) -> str:
    fq = (c.get("bootstrap") or {}).get("forget_quality") or {}
    if not fq.get("interval"):
        return "n/a"
    low, high = fq["interval"]
    return f"[{_num(low, 'forget_quality')}, {_num(high, 'forget_quality')}]"


def _pairs_table(comparisons: Sequence[Mapping[str, Any]]) -> Table:
    rows = []
    for comp in comparisons:
        verdicts = {A_WINS: f"{comp['a']} wins", B_WINS: f"{comp['b']} wins", TIE: "tie", None: "not compared"}
        for c in comp["per_seed"]:
            d, steps = c["difference"] or {}, c["ladder_steps"]
            rows.append((f"{comp['a']} vs {comp['b']}", str(c["seed"]),
                         c["a"]["setting"] if c["a"] else "none", c["b"]["setting"] if c["b"] else "none",
                         _num(d.get("forget_quality"), "forget_quality"), _interval(c),
                         "n/a" if steps is None else f"{steps:+d}" if steps else "0",
                         _num(d.get("model_utility"), "model_utility"), _num(d.get("privleak"), "privleak"),
                         f"{verdicts[c['verdict']]}: {c['why']}"))
    return Table(("A vs B", "seed", "A's setting", "B's setting", "ΔFQ (A - B)", "95 % bootstrap interval",
                  "ladder steps", "ΔMU", "ΔPrivLeak (%)", "verdict"), tuple(rows))


def _steps_table(matched: Sequence[Mapping[str, Any]]) -> Table:
    rows = []
    for m in matched:
        ladder = [k for k in m["ladder_steps"] if k is not None]
        rows.append((m["method"], f"{m['step']:g}", str(m["seeds"]), f"{m['higher_utility']} of {m['seeds']}",
                     _cell(m["model_utility"], "model_utility"),
                     ", ".join(f"{k:+d}" if k else "0" for k in ladder) or "n/a",
                     _cell(m["privleak"], "privleak"),
                     _cell(m["retain_extraction_strength"], "retain_extraction_strength")))
    return Table(("method", "step norm", "seeds", "utility above TV's", "ΔMU (method - TV)",
                  "ΔFQ in ladder steps, per seed", f"Δ{metric('privleak').label}",
                  f"Δ{metric('retain_extraction_strength').label}"), tuple(rows))


def spread_blocks(spread: Mapping[str, Any], level: int = 2) -> list[Block]:
    """The cross-seed section: what was re-seeded, each method's front with its spread, the best setting within
    the budget over the seeds, and the answers with the rule and the per-seed comparisons (headings from
    ``level``)."""
    seeds = spread["seeds"]
    n = spread.get("forget_rows")
    budget = spread.get("utility_budget") or {}
    blocks: list[Block] = [
        Heading(f"Across the {len(seeds)} seeds ({', '.join(map(str, seeds))})" if len(seeds) > 1
                else f"One seed ({seeds[0]}): the paired comparisons", level),
        Paragraph(seeding_text(spread.get("seeding"))),
        Paragraph("Each cell: mean ± sd [min, max] over the seeds (sd: the sample standard deviation). Forget "
                  "quality is a p-value, and a mean of p-values is pulled up by the largest: read its median and "
                  "the mean of its log10 beside it"
                  + (f"; with {n} forget questions it takes only the values of the KS ladder, and one step of it "
                     "is a tie." if n else ".")),
    ]
    blocks.append(Heading("The answer: does PerTA beat TV and the gradient baselines at matched utility?", level + 1))
    if spread["comparisons"]:
        blocks += [Bullets(tuple(c["answer"] for c in spread["comparisons"])), Paragraph(f"Rule: {spread['rule']}")]
    else:
        blocks.append(Paragraph("No PerTA method and baseline (tv, ga, gd, npo) were both run: nothing to compare."))
    blocks.append(Heading("Best setting within the utility budget", level + 1))
    if budget.get("threshold") is not None:
        blocks.append(Paragraph(f"Model utility >= {budget['fraction']:g} x the target's = "
                                f"{_num(budget['threshold'], 'model_utility')} (the target is not re-seeded: the "
                                "same budget in every seed); per seed, the setting with the highest forget quality "
                                "within it."))
    blocks.append(_best_table(spread["best"]))
    blocks.append(Heading("Each method's front", level + 1))
    for method, front in spread["fronts"].items():
        blocks += [Paragraph(f"**{method}**"), _front_table(front)]
    if spread["comparisons"]:
        blocks += [Heading("Paired comparisons per seed", level + 1),
                   Paragraph("A's best point within the budget against B's in each seed; differences A - B; the "
                             "interval is the paired bootstrap's over the question rows (n/a: the per-question "
                             "results were not at hand)."),
                   _pairs_table(spread["comparisons"])]
    if spread.get("matched_steps"):
        blocks += [Heading("PerTA against TV at the same step norm", level + 1),
                   Paragraph("The same size of update, ||alpha w ⊙ tau|| / ||tau||, for both (`apply --step`): what "
                             "differs is where the weight map puts it. Differences method - TV over the seeds (mean ± "
                             "sd [min, max]); forget quality as KS ladder steps per seed (one step is a tie); "
                             "utility, PrivLeak (closer to 0 is better) and the retain authors' extraction strength "
                             "(higher: more of the retained knowledge kept verbatim)."),
                   _steps_table(spread["matched_steps"])]
    return blocks


def spread_markdown(spread: Mapping[str, Any], level: int = 2) -> str:
    """:func:`spread_blocks` as markdown."""
    return to_markdown(spread_blocks(spread, level))
