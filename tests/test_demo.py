"""The main job end to end: `perta-hub demo --quick` (the bundled recipe quick.yaml) on the bundled TOFU data,
offline."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scipy.stats import ks_2samp

from perta_hub.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    run = CliRunner().invoke(main, ["demo", "--quick", "-o", str(out), "--device", "cpu"])
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["alpha"]): r for r in summary["rows"]}
    alphas = summary["config"]["recipe"]["steps"]["tv"]["alpha"]
    assert summary["config"]["recipe"]["steps"]["target"]["device"] == "cpu"
    assert {m for m, _ in rows} == {"target", "retain", "tv", "perta-grad", "perta-fisher"}
    assert len(rows) == 2 + 3 * len(alphas)

    target, retain = rows[("target", None)], rows[("retain", None)]
    # the target memorised the forget authors, the retain model never saw them, both know the rest
    assert target["forget_extraction_strength"] > 0.9 and retain["forget_extraction_strength"] < 0.3
    assert target["retain_extraction_strength"] > 0.9 and retain["retain_extraction_strength"] > 0.9
    assert retain["forget_quality"] is None  # the reference itself
    # every other model's forget quality is the KS p-value of its forget truth ratios against the retain model's
    reference = json.loads((out / "eval" / "tofu.retain.json").read_text())["forget_truth_ratio"]["value_by_index"]
    evaluated = json.loads((out / "eval" / "tofu.json").read_text())["models"]
    assert len(evaluated) == len(rows) - 1
    by_model = {r["model"]: r for r in summary["rows"]}
    for result in evaluated:
        ratios = result["forget_truth_ratio"]["value_by_index"]
        expected = ks_2samp([ratios[k]["score"] for k in reference], [v["score"] for v in reference.values()]).pvalue
        assert by_model[result["meta"]["model"]]["forget_quality"] == pytest.approx(expected, rel=1e-12)
    assert target["forget_quality"] < 0.5  # the target remembers: far from the retain model
    # subtracting the task vector makes the target forget, more with a larger alpha
    strongest = rows[("tv", max(alphas))]
    assert strongest["forget_extraction_strength"] < 0.5 * target["forget_extraction_strength"]
    for method in ("tv", "perta-grad", "perta-fisher"):
        es = [rows[(method, a)]["forget_extraction_strength"] for a in sorted(alphas)]
        assert es[-1] < es[0]
        assert set(summary["best"][method]) == {"within_budget", "highest_forget_quality"}

    # the target tells its forget authors from unseen (holdout) ones far better than the retain model does
    assert target["privleak"] > 20 and target["mia_min_k"] > 0.8 and retain["privleak"] is None
    report = (out / "results.md").read_text()
    assert report.startswith("# TOFU-mini unlearning report (`perta-hub demo --quick`)\n\n## Setup")
    assert "| perta-grad |" in report and "## Caveats (computed from this run)" in report
    assert "PrivLeak Min-K% (%)" in report
    assert f"{len(reference)} forget questions" in report and "| target | 160 rows:" in report
    reached = any((b["within_budget"] or {}).get("forget_quality", 0) >= 0.05 for b in summary["best"].values())
    assert ("**No method forgets on this toy.**" in report) is not reached
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()
    files = [str((out / name).resolve()) for name in ("results.md", "results.png", "report.html")]
    assert summary["report_files"] == files
    assert run.output.rstrip().endswith("\n".join(["Report:", *(f"  {f}" for f in files)]))
    assert summary["timings_s"]["total"] > 0
