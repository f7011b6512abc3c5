"""The spread over seeds (`perta-hub run --seeds K`): each method's front and best point within the budget as
mean / sd / median / min-max over the seeds, and the verdict rule of the paired comparisons (the KS ladder's tie,
the paired bootstrap's veto, mixed seeds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from test_privacy import synthetic

from perta_hub.evaluation.report import ks_ladder, summarise
from perta_hub.evaluation.seeds import (
    A_WINS,
    B_WINS,
    TIE,
    ladder_steps,
    matched_steps,
    seed_spread,
    seed_verdict,
    spread_markdown,
)


@dataclass(frozen=True)
class Cfg:
    seeds: int = 3


def _result(model, mu, fq, privleak=None, **meta):
    return {"meta": {"model": model, "forget_split": "forget01", "num_examples": {"forget": 40, "retain": 40},
                     "max_examples": 40, "subset": True, **meta},
            "forget_quality": {"agg_value": fq, "log10": math.log10(fq) if fq else None},
            "model_utility": {"agg_value": mu}, "privleak": {"agg_value": privleak}}


def _summary(seed, points, methods=("tv", "perta-fisher", "ga")):
    """One seed's summary by the report's own `summarise`: the target (utility 1.0, so the budget is 0.95) and the
    ``points`` (method, {step | setting | alpha}, model utility, forget quality, PrivLeak)."""
    results = [_result("/m/target", 1.0, 1e-5, 90.0)]
    for method, where, mu, fq, leak in points:
        name = "-".join(f"{k}{v}" for k, v in where.items())
        results.append(_result(f"/s{seed}/{method}-{name}", mu, fq, leak, method=method, **where))
    return summarise(results, Cfg(), {"/m/target": "target"}, methods=methods)


# per seed: tv at step 1 and 2; perta-fisher at step 1 and 2 (alpha set from the step: a different alpha per seed);
# ga at one learning rate (outside the budget in seed 2)
FQ_TV1 = (0.0541, 0.405, 0.266)
MU_TV1 = (0.97, 0.96, 0.98)
LEAK_TV1 = (10.0, -4.0, 3.0)
SEEDS = {
    seed: _summary(seed, [
        ("tv", {"step": 1.0, "alpha": 1.0}, MU_TV1[k], FQ_TV1[k], LEAK_TV1[k]),
        ("tv", {"step": 2.0, "alpha": 2.0}, 0.90, 0.9, -20.0),
        ("perta-fisher", {"step": 1.0, "alpha": 3.1 + k}, 0.99, (0.165, 0.0971, 0.405)[k], 5.0),
        ("perta-fisher", {"step": 2.0, "alpha": 6.2 + 2 * k}, 0.97, (0.787, 0.0541, 0.787)[k], 1.0),
        ("ga", {"setting": "lr=0.0001,ep=1"}, (0.96, 0.99, 0.5)[k], (0.0286, 0.0286, 0.994)[k], 40.0),
    ]) for k, seed in enumerate((0, 7, 42))
}


def test_the_front_and_the_best_point_over_three_seeds_as_computed_by_hand():
    spread = seed_spread(SEEDS)
    assert spread["seeds"] == [0, 7, 42] and spread["forget_rows"] == 40
    tv = spread["fronts"]["tv"]
    assert [f["setting"] for f in tv] == ["step 1", "step 2"] and [f["seeds"] for f in tv] == [3, 3]
    fq = tv[0]["forget_quality"]
    mean = (0.0541 + 0.405 + 0.266) / 3
    sd = math.sqrt(((0.0541 - mean) ** 2 + (0.405 - mean) ** 2 + (0.266 - mean) ** 2) / 2)
    assert fq == pytest.approx({"n": 3, "mean": 0.2417, "sd": sd, "median": 0.266, "min": 0.0541, "max": 0.405})
    assert mean == pytest.approx(0.2417) and sd == pytest.approx(0.1767, abs=1e-4)  # deviations -0.1876, 0.1633, 0.0243
    log10 = tv[0]["log10_forget_quality"]
    assert log10["mean"] == pytest.approx((math.log10(0.0541) + math.log10(0.405) + math.log10(0.266)) / 3)
    assert log10["mean"] < math.log10(mean)  # the mean of p-values sits above their geometric mean
    assert tv[0]["model_utility"]["mean"] == pytest.approx(0.97) and tv[0]["model_utility"]["sd"] == pytest.approx(0.01)
    leak = tv[0]["privleak"]
    assert (leak["mean"], leak["median"], leak["min"], leak["max"]) == pytest.approx((3.0, 3.0, -4.0, 10.0))
    assert leak["sd"] == pytest.approx(7.0)  # deviations 7, -7, 0: sqrt(98 / 2)
    # PerTA's rows meet by the step asked for, not by alpha (which differs per seed)
    perta = spread["fronts"]["perta-fisher"]
    assert [f["setting"] for f in perta] == ["step 1", "step 2"] and [f["seeds"] for f in perta] == [3, 3]
    assert perta[1]["forget_quality"]["median"] == pytest.approx(0.787)
    assert [f["setting"] for f in spread["fronts"]["ga"]] == ["lr=0.0001,ep=1"]

    best = spread["best"]
    assert best["tv"]["settings"] == {"0": "step 1", "7": "step 1", "42": "step 1"}
    assert best["tv"]["forget_quality"]["mean"] == pytest.approx(mean)
    assert best["perta-fisher"]["settings"] == {"0": "step 2", "7": "step 1", "42": "step 2"}
    assert best["perta-fisher"]["forget_quality"]["median"] == pytest.approx(0.787)
    assert best["perta-fisher"]["model_utility"]["mean"] == pytest.approx((0.97 + 0.99 + 0.97) / 3)
    assert (best["ga"]["within_budget"], best["ga"]["seeds"]) == (2, 3)  # seed 42: MU 0.5 is outside the budget
    assert best["ga"]["settings"]["42"] is None and best["ga"]["forget_quality"]["n"] == 2
    assert best["ga"]["privleak"]["sd"] is not None and best["ga"]["privleak"]["sd"] == pytest.approx(0.0)


def test_perta_against_tv_at_the_same_step_norm_as_computed_by_hand():
    matched = matched_steps(SEEDS)
    assert [(m["method"], m["step"], m["seeds"]) for m in matched] == [("perta-fisher", 1.0, 3), ("perta-fisher", 2.0, 3)]
    one, two = matched
    # step 1: MU 0.99 against 0.97 / 0.96 / 0.98; FQ 0.165 / 0.0971 / 0.405 against 0.0541 / 0.405 / 0.266
    assert one["model_utility"]["mean"] == pytest.approx((0.02 + 0.03 + 0.01) / 3)
    assert one["higher_utility"] == 3
    assert one["ladder_steps"] == [2, -3, 1]  # 0.0541 -> 0.0971 -> 0.165; 0.0971 -> ... -> 0.405; 0.266 -> 0.405
    assert one["privleak"]["mean"] == pytest.approx(((5 - 10) + (5 + 4) + (5 - 3)) / 3)
    assert one["retain_extraction_strength"] is None  # not in these summaries
    # step 2: MU 0.97 against 0.90 in every seed; PrivLeak 1 against -20
    assert two["model_utility"]["min"] == pytest.approx(0.07) and two["higher_utility"] == 3
    assert two["privleak"]["mean"] == pytest.approx(21.0)
    assert spread_markdown(seed_spread(SEEDS)).count("| perta-fisher | 2 | 3 | 3 of 3 |") == 1
    # a step only one of them ran, and the baselines, are not compared
    assert all(m["method"].startswith("perta") for m in matched)


def test_the_verdict_rule_on_constructed_cases():
    ladder = ks_ladder(40)
    assert ladder[4:9] == [0.0286, 0.0541, 0.0971, 0.165, 0.266]

    def row(fq):
        return {"forget_quality": fq}

    assert ladder_steps(0.405, 0.0286, 40) == 5 and ladder_steps(0.0286, 0.405, 40) == -5
    assert seed_verdict(row(0.405), row(0.0286), 40)[0] == A_WINS  # a clear win
    verdict, why = seed_verdict(row(0.0971), row(0.0541), 40)  # one ladder step: a tie
    assert (verdict, why) == (TIE, "1 ladder step apart")
    assert seed_verdict(row(0.0541), row(0.0541), 40)[0] == TIE
    assert seed_verdict(row(0.0541), row(0.165), 40) == (B_WINS, "2 ladder steps apart")  # two steps: a win
    assert seed_verdict(row(0.3), None, 40) == (A_WINS, "only A has a setting within the budget")
    assert seed_verdict(None, None, 40)[0] is None
    assert seed_verdict(row(None), row(0.3), 40)[0] is None
    assert seed_verdict(row(0.0971), row(0.0541), None)[0] == A_WINS  # no ladder known: any difference counts

    # the paired bootstrap over the question rows vetoes a win its interval does not support, and confirms one
    same = {"forget_quality": {"verdict": "no measurable difference", "advantage_interval": [-0.1, 0.3]}}
    assert seed_verdict(row(0.405), row(0.0286), 40, same) == (
        TIE, "5 ladder steps apart, but the paired bootstrap interval of the FQ advantage includes 0")
    clear = {"forget_quality": {"verdict": "A beats B", "advantage_interval": [0.1, 0.3]}}
    assert seed_verdict(row(0.405), row(0.0286), 40, clear) == (
        A_WINS, "5 ladder steps apart, bootstrap interval excludes 0")


def test_paired_comparisons_count_seeds_and_answer_in_one_sentence():
    spread = seed_spread(SEEDS)
    pairs = {(c["a"], c["b"]): c for c in spread["comparisons"]}
    assert list(pairs) == [("perta-fisher", "tv"), ("perta-fisher", "ga")]
    tv = pairs["perta-fisher", "tv"]
    # seed 0: 0.787 vs 0.0541 (a win); seed 7: 0.0971 vs 0.405 (TV wins); seed 42: 0.787 vs 0.266 (a win)
    assert [c["verdict"] for c in tv["per_seed"]] == [A_WINS, B_WINS, A_WINS]
    assert (tv["wins"], tv["losses"], tv["ties"]) == (2, 1, 0)
    first = tv["per_seed"][0]
    assert first["seed"] == 0 and (first["a"]["setting"], first["b"]["setting"]) == ("step 2", "step 1")
    assert first["difference"]["forget_quality"] == pytest.approx(0.787 - 0.0541)
    assert first["difference"]["privleak"] == pytest.approx(1.0 - 10.0)
    assert first["difference"]["abs_privleak"] == pytest.approx(1.0 - 10.0)
    assert first["bootstrap"] is None and "not at hand" in first["bootstrap_note"]
    assert tv["answer"].startswith("**Mixed**: PerTA-fisher beats TV by more than the noise in 2 of 3 seeds, TV "
                                   "beats PerTA-fisher in 1. Over the 3 seeds where both keep the budget, "
                                   "PerTA-fisher - TV: mean ΔFQ ")
    median = sorted([0.787 - 0.0541, 0.0971 - 0.405, 0.787 - 0.266])[1]
    assert f"median {median:.4f}" in tv["answer"]
    assert "PrivLeak there PerTA-fisher 2.33 %, TV 3.00 % (means; closer to 0 is better)" in tv["answer"]
    ga = pairs["perta-fisher", "ga"]
    assert [c["verdict"] for c in ga["per_seed"]] == [A_WINS, A_WINS, A_WINS]
    assert ga["answer"].startswith("**Yes**: PerTA-fisher beats GradAscent by more than the noise in 3 of 3 seeds "
                                   "(in 1 only PerTA-fisher keeps the budget). Over the 2 seeds where both")

    md = spread_markdown(spread)
    assert md.startswith("## Across the 3 seeds (0, 7, 42)\n")
    for line in ("### The answer: does PerTA beat TV and the gradient baselines at matched utility?",
                 "Rule: In each seed, each method's point is its best setting within the utility budget",
                 "### Best setting within the utility budget", "### Each method's front",
                 "| step 1 | 3 | n/a | 0.2417 ± 0.1767 [0.0541, 0.4050] | 0.2660 |",
                 "| ga | 2 of 3 | 0: lr=0.0001,ep=1, 7: lr=0.0001,ep=1, 42: none |",
                 "| perta-fisher vs tv | 7 | step 1 | step 1 | -0.3079 | n/a | -3 | 0.0300 | 9.00 | tv wins: 3 ladder "
                 "steps apart |",
                 "**Re-seeded**: the data order of the forget fine-tune"):
        assert line in md, line
    named = spread_markdown(seed_spread(SEEDS, seeding={"re-seeded": ["task-vector"], "per seed": ["tv", "eval"],
                                                        "once": ["target", "retain"]}))
    assert ("**Re-seeded** (their `seed` set to each seed): `task-vector`. **Run once per seed, unchanged** (they "
            "use a re-seeded output): `tv`, `eval`. **Not re-seeded** (run once, the same in every seed): `target`, "
            "`retain`, and the evaluation itself") in named


def test_the_paired_bootstrap_runs_where_both_points_per_question_results_are_at_hand():
    # two seeds; in each, PerTA's and TV's best points are backed by per-question results (40 rows a split)
    a, b, twin = synthetic(40, 0), synthetic(40, 0, tr_scale=8.0), synthetic(40, 0)
    fa, fb = a["forget_quality"]["agg_value"], b["forget_quality"]["agg_value"]
    assert ladder_steps(fa, fb, 40) >= 2
    summaries = {s: _summary(s, [("tv", {"step": 1.0}, 0.97, fb, 0.0), ("perta-fisher", {"step": 1.0}, 0.97, fa, 0.0)])
                 for s in (1, 2)}
    results = {1: {"/s1/perta-fisher-step1.0": a, "/s1/tv-step1.0": b},
               2: {"/s2/perta-fisher-step1.0": a, "/s2/tv-step1.0": twin}}  # seed 2: the same model twice
    spread = seed_spread(summaries, results, resamples=100)
    (comp,) = spread["comparisons"]
    one, two = comp["per_seed"]
    assert one["bootstrap"]["forget_quality"]["verdict"] == "A beats B" and one["bootstrap"]["resamples"] == 100
    assert one["verdict"] == A_WINS and one["why"].endswith("bootstrap interval excludes 0")
    assert two["bootstrap"]["forget_quality"]["interval"] == [0.0, 0.0]
    assert two["verdict"] == TIE and "includes 0" in two["why"]  # the summary's numbers say 2+ steps; the rows do not
    assert comp["answer"].startswith("**Mixed**: PerTA-fisher beats TV by more than the noise in 1 of 2 seeds")
    assert "| perta-fisher vs tv | 1 | step 1 | step 1 |" in spread_markdown(spread)


@pytest.mark.parametrize(("perta", "tv", "start"), [
    ((0.0971, 0.0541), (0.0541, 0.0971), "**No measurable difference**: neither PerTA-grad nor TV beats the other by "
                                         "more than the noise in any of the 2 seeds."),
    ((0.0286, 0.0286), (0.266, 0.405), "**No**: TV beats PerTA-grad by more than the noise in 2 of 2 seeds."),
    ((None, None), (0.266, 0.405), "**Not compared**: PerTA-grad against TV in none of the 2 seeds (no forget "
                                   "quality (no retain-model reference))."),
])
def test_the_answer_when_every_seed_agrees(perta, tv, start):
    summaries = {s: _summary(s, [("tv", {"step": 1.0}, 0.97, tv[s], 0.0),
                                 ("perta-grad", {"step": 1.0}, 0.97, perta[s], 0.0)], methods=("tv", "perta-grad"))
                 for s in (0, 1)}
    (comp,) = seed_spread(summaries)["comparisons"]
    assert comp["answer"].startswith(start), comp["answer"]


def test_one_seed_gives_its_paired_comparisons():
    """A run of one seed (``--set "seeds=[0]"``) still answers per pair; the spread is that seed's numbers."""
    spread = seed_spread({0: SEEDS[0]})
    tv = {(c["a"], c["b"]): c for c in spread["comparisons"]}["perta-fisher", "tv"]
    assert [c["verdict"] for c in tv["per_seed"]] == [A_WINS]
    assert tv["answer"].startswith("**Yes**: PerTA-fisher beats TV by more than the noise in 1 of 1 seeds")
    assert spread_markdown(spread).startswith("## One seed (0): the paired comparisons\n")
