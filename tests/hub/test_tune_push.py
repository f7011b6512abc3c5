"""``perta-hub tune --evaluate --push``: the chosen model, its full TOFU evaluation and the search reach the Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard

from perta_hub.cli import main
from perta_hub.merge.task_vector import task_vector
from tests.hub_server import HubServer


@pytest.mark.slow
def test_tune_evaluates_the_chosen_model_and_pushes_it(hub: HubServer, make_model: Any, tmp_path: Path,
                                                       tofu_dir: Path) -> None:
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "tune", str(base), "--task-vector", str(tv), "--forget", "tofu:forget01", "--retain", "tofu:retain99",
        "--data-dir", str(tofu_dir), "--forget-examples", "4", "--retain-examples", "4", "--max-evals", "3",
        "--alpha-range", "0.1", "1", "--utility-budget", "0.5", "--device", "cpu", "-o", str(out),
        "--evaluate", "--forget-split", "forget01", "--retain-model", str(base), "--eval-max-examples", "2",
        "--push", "user/tuned"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "perta_config.json").read_text())
    chosen = config["tune"]["chosen"]
    assert config["alpha"] == chosen and "forget quality" in result.output
    assert "AUC Min-K%++" in result.output and "PrivLeak" in result.output  # the privacy table of the evaluation
    evaluation = json.loads((tmp_path / "out.tofu_eval.json").read_text())  # beside -o, never in the cwd
    assert evaluation["meta"]["model"] == str(out) and (tmp_path / "out.tofu_eval.retain.json").is_file()
    assert not Path("tofu_forget01_retain_logs.json").exists()

    # the full evaluation is in the card (model-index), the search as a table and a plot, all on the Hub
    pushed = hub.files("user/tuned")
    assert {"tune.png", "perta_config.json", "README.md", "config.json"} <= set(pushed)
    assert any(name.endswith(".safetensors") for name in pushed)
    assert json.loads(pushed["perta_config.json"])["tune"]["chosen"] == chosen
    card = ModelCard.load("user/tuned")
    assert "## Choosing alpha" in card.text and "![alpha search](tune.png)" in card.text
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["model_utility"] == round(evaluation["model_utility"]["agg_value"], 6)
    assert "forget_quality" in values
    assert values["privleak"] == round(evaluation["privleak"]["agg_value"], 6) and "mia_min_k_plus_plus" in values
    assert hub.repo("user/tuned").private is False  # an unlearned model: public by default, like apply's
