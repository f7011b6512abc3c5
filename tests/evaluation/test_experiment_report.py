"""The experiment report on synthetic sweeps: the utility budget and the best setting per method, the caveats
computed from the data (the KS ladder, whether anything reached the retain model), the files written and the
lines printed, and a report.html that fetches nothing."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

import perta_hub.demo
from perta_hub.cli import main
from perta_hub.evaluation.metric_info import METRICS, metric_for_result_key
from perta_hub.evaluation.metrics import forget_quality
from perta_hub.evaluation.report import (
    CARD_METRICS,
    Setup,
    best_settings,
    caveats,
    finish_experiment,
    ks_ladder,
    report_markdown,
    summarise,
    verdict,
)


@dataclass(frozen=True)
class Cfg:
    alphas: tuple[float, ...] = (1.0, 2.0, 4.0)


def _result(model, mu, fq, method=None, alpha=None, rows=40, es=0.5):
    meta = {"model": model, "forget_split": "forget01", "num_examples": {"forget": rows, "retain": rows},
            "splits": {"forget": "forget01_perturbed", "retain": "retain_perturbed"}, "subset": True, "max_examples": rows,
            "max_new_tokens": 200, "dtype": "float32"}
    meta.update({k: v for k, v in (("method", method), ("alpha", alpha)) if v is not None})
    return {"meta": meta, "forget_quality": {"agg_value": fq, "log10": math.log10(fq) if fq else None}, "model_utility": {"agg_value": mu},
            "extraction_strength": {"agg_value": es}, "retain_extraction_strength": {"agg_value": 1.0},
            "forget_Q_A_ROUGE": {"agg_value": es}, "retain_Q_A_ROUGE": {"agg_value": 1.0},
            "forget_Q_A_Prob": {"agg_value": 0.1}, "forget_truth_ratio": {"agg_value": 0.7}}


def _summary(points, *, rows=40, smoke_test=None):
    """``points``: (method, alpha, model utility, forget quality); the target has utility 1.0, the budget 0.95."""
    results = [_result("/m/retain", 0.98, None, rows=rows), _result("/m/target", 1.0, 1e-5, rows=rows, es=1.0)]
    results += [_result(f"/m/{m}-{a}", mu, fq, method=m, alpha=a, rows=rows, es=0.1 * a)
                for m, a, mu, fq in points]
    setup = Setup(title="synthetic", model="a model", data=(("target", "80 rows"),), seeds=(0,),
                  methods={"tv": "task vector"}, smoke_test=smoke_test)
    return summarise(results, Cfg(), {"/m/target": "target", "/m/retain": "retain"}, methods=("tv", "perta-grad"),
                     setup=setup)


NOTHING_FORGETS = [("tv", 1.0, 0.97, 1e-4), ("tv", 2.0, 0.90, 0.2), ("perta-grad", 1.0, 0.99, 1e-5),
                   ("perta-grad", 2.0, 0.96, 3e-3)]
FORGETS = [("tv", 1.0, 0.97, 0.0541), ("tv", 2.0, 0.80, 0.9), ("perta-grad", 1.0, 0.99, 0.0541),
           ("perta-grad", 2.0, 0.96, 0.405)]


def test_ks_ladder_is_every_value_forget_quality_can_take():
    assert ks_ladder(40)[4:9] == [0.0286, 0.0541, 0.0971, 0.165, 0.266]
    assert ks_ladder(10) == [0.00206, 0.0123, 0.0524, 0.168, 0.418, 0.787, 0.994, 1.0]
    rng = random.Random(0)
    for n in (10, 40):  # forget quality of any two samples of n questions is on its ladder
        ladder = ks_ladder(n, floor=0.0)
        for _ in range(20):
            a, b = [rng.random() for _ in range(n)], [rng.gauss(0.3, 0.5) for _ in range(n)]
            assert float(f"{forget_quality(a, b):.3g}") in ladder


@pytest.mark.parametrize(("rows", "ladder"), [(40, "0.0286, 0.0541, 0.0971, 0.165, 0.266, 0.405"),
                                              (10, "0.00206, 0.0123, 0.0524, 0.168, 0.418, 0.787, 0.994, 1")])
def test_caveats_give_the_rows_and_the_ladder_of_forget_quality(rows, ladder):
    lines = caveats(_summary(NOTHING_FORGETS, rows=rows))
    rows_line = next(line for line in lines if line.startswith("**Rows evaluated**"))
    assert f"{rows} forget questions" in rows_line and ladder in rows_line
    assert "forget01_perturbed " + str(rows) in rows_line
    assert any(line.startswith("**One seed** (0)") for line in lines)


def test_budget_and_best_setting_per_method():
    summary = _summary(NOTHING_FORGETS)
    assert summary["utility_budget"] == {"fraction": 0.95, "threshold": pytest.approx(0.95)}
    best = summary["best"]
    # tv: alpha 2 has the higher forget quality but utility 0.90 < 0.95: within the budget only alpha 1 counts
    assert best["tv"]["within_budget"]["alpha"] == 1.0
    assert best["tv"]["highest_forget_quality"]["alpha"] == 2.0
    assert best["perta-grad"]["within_budget"]["alpha"] == 2.0
    assert best["perta-grad"]["highest_forget_quality"] is best["perta-grad"]["within_budget"]
    rows = [{"method": "m", "alpha": a, "forget_quality": fq, "model_utility": mu}
            for a, fq, mu in ((1, 0.4, 0.96), (2, 0.4, 0.99), (3, 0.9, 0.5))]
    picked = best_settings(rows, ("m", "absent"), threshold=0.95)
    assert set(picked) == {"m"}
    assert picked["m"]["within_budget"]["alpha"] == 2  # a tie goes to the higher utility
    assert best_settings(rows, ("m",), threshold=0.999)["m"]["within_budget"] is None


def test_no_method_reached_is_said_when_true_and_only_then():
    nothing = _summary(NOTHING_FORGETS, smoke_test="A smoke test.")
    lines = caveats(nothing)
    reached_line = next(line for line in lines if "No method reached" in line)
    assert "within the budget: the highest within it is perta-grad at alpha 2 (FQ 0.0030, MU 0.9600)" in reached_line
    # tv reached 0.2 only outside the budget: said, and not counted
    assert reached_line.endswith("Outside the budget: tv at alpha 2 (FQ 0.2000, MU 0.9000) (utility lost: not a win).")
    assert any(line.startswith("**No method forgets on this toy.** A smoke test.") for line in lines)
    assert "No method forgets on this toy" in verdict(nothing)
    outside = next(line for line in lines if "outside the utility budget is not a win" in line)
    assert "tv at alpha 2 (FQ 0.2000, MU 0.9000)" in outside

    forgets = _summary(FORGETS, smoke_test="A smoke test.")
    lines = caveats(forgets)
    assert not any("No method reached" in line or "No method forgets" in line for line in lines)
    assert any(line.startswith("**Reached within the budget**") and "perta-grad at alpha 2 (FQ 0.4050" in line
               for line in lines)
    assert verdict(forgets).startswith("Reached forget quality >= 0.05")
    assert "No method" not in report_markdown(forgets)


def test_a_point_outside_the_budget_is_never_called_best():
    text = report_markdown(_summary(NOTHING_FORGETS))
    best = text.split("## Best setting per method within the budget")[1].split("##")[0]
    tv = next(line for line in best.splitlines() if line.startswith("| tv |"))
    assert "| alpha 1 |" in tv and "0.2000 at alpha 2, MU 0.9000: outside the budget" in tv
    assert "best forget quality" not in text.lower()


def test_a_summary_read_back_from_json_gives_the_same_report():
    summary = _summary(NOTHING_FORGETS)
    text = report_markdown(summary)
    assert report_markdown(json.loads(json.dumps(summary))) == text
    assert "| perta-grad | alpha 2 | 0.0030 | 0.9600 | 0.2000 | same setting |" in text


def test_report_sections_in_order_and_every_metric_defined():
    text = report_markdown(_summary(FORGETS))
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads == ["# synthetic", "## Setup", "## What the numbers mean", "## Utility budget",
                     "## Best setting per method within the budget", "## Forget quality against model utility",
                     "## Caveats (computed from this run)", "## Every setting", "## Time per step"]
    definitions = text.split("## What the numbers mean")[1].split("## Utility budget")[0]
    for info in METRICS:
        if info.key not in ("retain_probability", "retain_truth_ratio") and not info.key.startswith(
                ("mia_", "privleak")):  # not in these synthetic results
            assert f"| {info.name} |" in definitions and info.better in definitions
    assert "| seeds | one: 0 |" in text and "**tv**: task vector" in text


def test_card_metric_names_come_from_the_metric_table():
    assert [metric_for_result_key(k).name for k in CARD_METRICS] == [
        "Forget quality (KS-test p-value)", "Model utility (harmonic mean of 9)", "Forget truth ratio",
        "Forget probability", "Forget ROUGE-L recall", "Forget extraction strength", "Retain extraction strength",
        "Retain probability", "Retain ROUGE-L recall", "Retain truth ratio", "MIA AUC (LOSS)", "MIA AUC (zlib)",
        "MIA AUC (Min-K%)", "MIA AUC (Min-K%++)", "PrivLeak (Min-K%, %)"]


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]


def test_finish_prints_absolute_paths_and_the_page_is_self_contained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = _summary(NOTHING_FORGETS)
    summary["timings_s"] = {"train": 1.5, "total": 2.0}
    printed: list[str] = []
    finish_experiment(summary, "out", printed.append)
    lines = printed[-1].splitlines()
    assert lines[0] == "Report:"
    paths = [line.strip() for line in lines[1:]]
    assert paths == [str(tmp_path / "out" / name) for name in ("results.md", "results.png", "report.html")]
    assert all((tmp_path / "out" / name).is_file() for name in ("results.md", "results.png", "report.html"))
    assert summary["report_files"] == paths and (tmp_path / "out" / "results.json").is_file()
    assert "No method reached" in printed[0]  # the summary printed before the paths
    page = (tmp_path / "out" / "report.html").read_text()
    refs = _Refs()
    refs.feed(page)
    assert refs.refs == [("img", "src", refs.refs[0][2])] and refs.refs[0][2].startswith("data:image/png;base64,")
    assert not refs.tags & {"link", "script", "iframe", "object"}
    assert "<table>" in page and "No method reached" in page and "| " not in page


@pytest.mark.parametrize("quiet", [False, True])
def test_demo_command_ends_with_where_the_report_is(tmp_path, monkeypatch, quiet):
    def fake_run_demo(out_dir, *, echo, **_):
        echo("== a step")
        return finish_experiment(_summary(NOTHING_FORGETS), out_dir, echo)

    monkeypatch.setattr(perta_hub.demo, "run_demo", fake_run_demo)
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "-o", str(out), *(["-q"] if quiet else [])])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-4:] == ["Report:", *(f"  {out / name}" for name in ("results.md", "results.png", "report.html"))]
    assert ("== a step" in result.output) is not quiet
    assert "No method reached" in result.output
