"""Every folder finished inside a recipe step records the recipe (one optional record field, RecipeRef); a dry run
of a recipe on a local model plans with estimates and writes nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import CheckpointError
from perta_hub.merge.task_vector import task_vector
from perta_hub.records import RecipeRef, parse_record, read_record
from perta_hub.runtime.invocation import in_recipe_step


def test_a_folder_finished_in_a_recipe_step_records_it(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    ref = RecipeRef.from_dict({"sha256": "ab" * 32, "step": "tv", "seed": 2, "file": "/x/recipe.yaml"})
    with in_recipe_step(ref):
        inside = task_vector(base, tuned, tmp_path / "inside", progress=False)
    outside = task_vector(base, tuned, tmp_path / "outside", progress=False)
    assert read_record(inside).recipe == ref
    data = json.loads((inside / "perta_config.json").read_text())
    assert data["recipe"] == {"sha256": "ab" * 32, "step": "tv", "seed": 2, "file": "/x/recipe.yaml"}
    assert list(data).index("recipe") == list(data).index("command") + 1
    assert "recipe" not in json.loads((outside / "perta_config.json").read_text())
    with pytest.raises(CheckpointError, match=r"key 'recipe\.step' is missing"):
        parse_record({**data, "recipe": {"sha256": "x"}})


def test_a_dry_run_plans_a_local_model_with_estimates_and_writes_nothing(tmp_path, make_model, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    base = make_model("base")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
models: {{base: {base}}}
data: {{forget: tofu:forget01, retain: {{from: tofu:full, rows: "0:40"}}}}
steps:
  tv: {{command: task-vector, model: "${{base}}", forget: "${{forget}}", epochs: 2}}
  wm: {{command: compute-weights, model: "${{base}}", forget: "${{forget}}", retain: "${{retain}}", method: grad}}
  perta: {{command: apply, model: "${{base}}", task-vector: "${{tv}}", weights: "${{wm}}", alpha: [1, 2]}}
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Recipe r (sha256 ") and lines[0].endswith(f"into {out}:")
    table = [line.split() for line in lines[2:5]]
    assert [row[1:4] for row in table] == [["tv", "task-vector", "run"], ["wm", "compute-weights", "run"],
                                           ["perta", "apply", "run"]]
    assert all(row[4] != "?" for row in table)  # 40 rows x 2 epochs x the model's size, at the table's rate
    assert "built-in table (SmolLM2-135M on 2 CPU cores, docs/results-weak-target.md)" in result.output
    assert "3 steps: 0 reused, 3 to run, about " in result.output and "Nothing was written." in result.output
    assert not out.exists() and not (tmp_path / "hf").exists()
