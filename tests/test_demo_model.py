"""`demo --model MODEL`: the real-model code path on a tiny Llama (TV, PerTA, GA, GradDiff, NPO, one table)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from perta_hub.cli import main


@pytest.mark.slow
def test_demo_with_a_given_model_runs_every_method(tmp_path, make_model, monkeypatch):
    from perta_hub.demo import model as demo_model

    tiny = demo_model.ModelDemoConfig(
        retain_authors=1, forget_split="forget01", memorise_epochs=1, memorise_lr=3e-3, forget_epochs=1,
        forget_lr=3e-3, alphas=(1.0, 2.0), gradient_grid={"ga": ((1e-3, 1.0),), "gd": ((1e-3, 1.0),),
                                                          "npo": ((1e-3, 1.0), (3e-3, 1.0))},
        tune=("tv", "perta-fisher"), tune_alpha_range=(0.02, 0.5), tune_max_evals=3, eval_examples=4, batch_size=8, eval_batch_size=16, max_new_tokens=8, max_length=128)
    monkeypatch.setattr(demo_model, "MODEL_QUICK", tiny)
    base = make_model("pretrained")
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--model", str(base), "--quick", "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in summary["rows"]]
    assert methods.count("target") == 1 and methods.count("retain") == 1
    assert sorted(r["alpha"] for r in summary["rows"] if r["method"] == "tv") == [1.0, 2.0]
    for m in ("perta-grad", "perta-fisher"):  # sampled at TV's step norms: alpha = step / (||w ⊙ tau|| / ||tau||)
        ratio = summary["weight_maps"][m]["groups"]["all"]["norm_w_tau_over_norm_tau"]
        assert 0 < ratio < 1
        rows = sorted((r for r in summary["rows"] if r["method"] == m), key=lambda r: r["alpha"])
        assert [r["alpha"] for r in rows] == [float(f"{s / ratio:.3g}") for s in (1.0, 2.0)]
        assert [round(r["step_norm"], 2) for r in rows] == [1.0, 2.0]
    for label in ("tv", "perta-fisher"):  # tune's chosen alpha, evaluated beside the sweeps
        chosen = summary["tune"][label]["chosen_alpha"]
        assert 0.02 <= chosen <= 0.5 and 1 <= summary["tune"][label]["alphas_evaluated"] <= 3
        assert [r["alpha"] for r in summary["rows"] if r["method"] == f"tune {label}"] == [chosen]
    assert sorted(r["setting"] for r in summary["rows"] if r["method"] == "npo") == ["lr=0.001,ep=1", "lr=0.003,ep=1"]
    assert {"ga", "gd"} <= set(methods)
    assert set(summary["best"]) == {"tv", "perta-grad", "perta-fisher", "ga", "gd", "npo"}
    # the target and the retain model come from the given model: the demo data, the model's own tokenizer
    target = json.loads((out / "target" / "perta_config.json").read_text())
    assert target["base"]["source"] == str(base) and target["data"]["num_rows"] == 20 + 40
    retain = json.loads((out / "retain" / "perta_config.json").read_text())
    assert retain["data"]["num_rows"] == 20
    assert summary["compute_s"]["npo"]["lr=0.003,ep=1"] > 0 and summary["compute_s"]["perta-grad"]["weight_map"] > 0
    report = (out / "results.md").read_text()
    assert "| npo | lr=0.003,ep=1 |" in report and "`tune` on perta-fisher chose alpha" in report
    assert "| gradient baselines |" in report and "**npo**: NPO" in report
    assert result.output.rstrip().endswith(f"  {(out / 'report.html').resolve()}")
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gd = json.loads((out / "unlearned" / "gd-lr0.001-ep1" / "perta_config.json").read_text())
    assert gd["kind"] == "unlearned_model" and gd["retain_data"]["num_examples"] == 20
