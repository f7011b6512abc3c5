"""The experiment of docs/results-weak-target.md (smollm2.yaml, what `demo --model M` runs) on a tiny pretrained Llama: TV and
PerTA at matched step norms, GA / GradDiff / NPO, tune, the follow-ups, one report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from perta_hub.cli import main

#: the recipe's values made small enough for a Llama of 45k parameters
SMALL = [
    "defaults.all.device=cpu", "defaults.all.max-length=128",
    "data.more-retain={concat: ['${retain-authors}', {from: tofu:full, rows: '40:60'}]}",
    "defaults.finetune.lr=3e-3", "defaults.finetune.epochs=1", "defaults.finetune.batch-size=8",
    "steps.task-vector.lr=3e-3", "steps.task-vector.batch-size=8", "defaults.unlearn.batch-size=8",
    "defaults.evaluate.max-examples=4", "defaults.evaluate.batch-size=16", "defaults.evaluate.max-new-tokens=8",
    "steps.tune.alpha-range=[0.02, 0.5]", "steps.tune.max-evals=3", "steps.tune.forget-examples=4",
    "steps.tune.retain-examples=4", "steps.tune.max-length=128",
]


@pytest.mark.slow
def test_the_smollm2_recipe_runs_every_method_on_a_tiny_model(tmp_path, make_model, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    base = make_model("pretrained")
    out = tmp_path / "out"
    sets = [f"models.base={base}", *SMALL]
    result = CliRunner().invoke(main, ["run", "smollm2", "-o", str(out), *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in summary["rows"]]
    assert methods.count("target") == 1 and methods.count("retain") == 1
    assert sorted(r["alpha"] for r in summary["rows"] if r["method"] == "tv") == pytest.approx(
        [1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0])  # apply --step without a map: alpha = step
    for label in ("perta-grad", "perta-fisher", "perta-fisher-p2", "perta-fisher-lam4", "perta-fisher-more-retain"):
        ratio = summary["weight_maps"][label]["groups"]["all"]["norm_w_tau_over_norm_tau"]
        assert 0 < ratio < 1, label
        rows = [r for r in summary["rows"] if r["method"] == label]
        assert [r["step_norm"] for r in rows] == pytest.approx([r["alpha"] * ratio for r in rows], rel=1e-3)
    assert sorted(r["setting"] for r in summary["rows"] if r["method"] == "npo") == ["lr=0.0001,ep=1",
                                                                                     "lr=5e-05,ep=1"]
    assert {"ga", "gd", "tv-from-base"} <= set(methods)
    for label in ("tv", "perta-fisher"):  # tune's chosen alpha, evaluated beside the sweeps
        chosen = summary["tune"][label]["chosen_alpha"]
        assert 0.02 <= chosen <= 0.5 and 1 <= summary["tune"][label]["alphas_evaluated"] <= 3
        assert [r["alpha"] for r in summary["rows"] if r["method"] == f"tune {label}"] == [chosen]
    target = json.loads((out / "target" / "perta_config.json").read_text())
    assert target["base"]["source"] == str(base) and target["data"]["num_rows"] == 40 + 40
    assert target["recipe"]["step"] == "target"
    gd = json.loads((out / "gd-lr5e-05" / "perta_config.json").read_text())
    assert gd["kind"] == "unlearned_model" and gd["retain_data"]["num_examples"] == 40
    report = (out / "results.md").read_text()
    assert "| npo | lr=0.0001,ep=1 |" in report and "`tune` on perta-fisher chose alpha" in report
    assert "| gd-lr5e-05 | gd on 40 rows: forget = tofu:forget01" in report and "**npo**: NPO" in report
    assert "**perta-fisher-p2**: PerTA (" in report and "p = 2" in report
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
