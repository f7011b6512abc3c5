"""The recipe format as JSON Schema: valid draft 2020-12, generated from the options, and the bundled recipes
(copied in examples/recipes/) follow it, load, and plan without writing anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.recipes import load_recipe, recipe_schema
from perta_hub.recipes.bundled import BUNDLED, bundled_recipes, find_recipe
from perta_hub.recipes.kinds import kinds
from perta_hub.recipes.load import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
jsonschema = pytest.importorskip("jsonschema")


def test_the_schema_is_valid_json_schema_from_the_cli():
    result = CliRunner().invoke(main, ["run", "--schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == recipe_schema()


def test_every_option_of_every_command_is_a_key_with_its_type_and_default():
    steps = recipe_schema()["properties"]["steps"]["additionalProperties"]["oneOf"]
    by_command = {s["properties"]["command"]["const"]: s for s in steps}
    assert set(by_command) == set(kinds())
    unlearn = by_command["unlearn"]["properties"]
    assert unlearn["lr"]["exclusiveMinimum"] == 0 and unlearn["lr"]["default"] == 1e-5
    assert unlearn["method"]["enum"] == ["ga", "gd", "npo", None]  # null: the default
    assert "output" not in unlearn and "label" in unlearn
    assert by_command["compute-weights"]["properties"]["retain-fraction"]["maximum"] == 1
    assert by_command["push"]["properties"]["private"]["type"] == ["boolean", "null"]
    assert by_command["unlearn"]["description"] == "perta-hub unlearn; needs model, method, forget (here or in defaults)"
    assert {"alpha", "step"} <= set(by_command["apply"]["properties"])


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_bundled_recipes_follow_the_schema_and_plan(name, tmp_path):
    path = bundled_recipes()[name]
    jsonschema.validate(parse_yaml(path.read_text(), str(path)), recipe_schema())
    recipe = load_recipe(path)
    result = CliRunner().invoke(main, ["run", name, "--dry-run", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    planned = re.search(r"^(\d+) steps: 0 reused, (\d+) to run", result.output, flags=re.M)
    assert planned and planned[1] == planned[2], result.output
    # with seeds, the unlearning stage is planned once per seed
    assert int(planned[1]) == len(recipe.steps) if not recipe.seeds else int(planned[1]) > len(recipe.steps)
    assert "Nothing was written." in result.output and not (tmp_path / "out").exists()


def test_a_schema_violation_is_found():
    bad = {"steps": {"a": {"command": "unlearn", "model": "m", "method": "ga", "forget": "f", "lr": -1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, recipe_schema())


def test_examples_are_the_bundled_recipes():
    examples = {p.name: p.read_text() for p in (ROOT / "examples" / "recipes").glob("*.yaml")}
    assert examples == {p.name: p.read_text() for p in BUNDLED.glob("*.yaml")}
    assert {"quick.yaml", "smollm2.yaml", "own-model.yaml"} <= set(examples)


def test_a_recipe_name_finds_the_bundled_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recipe("quick") == find_recipe("quick.yaml") == BUNDLED / "quick.yaml"
    (tmp_path / "quick.yaml").write_text("steps: {}\n")
    assert find_recipe("quick.yaml") == Path("quick.yaml")  # a file of that name wins
    (tmp_path / "smollm2").mkdir()  # e.g. the model folder of the same name: not a recipe, does not hide it
    assert find_recipe("smollm2") == BUNDLED / "smollm2.yaml"


def test_a_folder_or_a_missing_file_is_one_line(tmp_path):
    from perta_hub.recipes.load import RecipeError

    with pytest.raises(RecipeError, match="a folder, not a recipe file"):
        load_recipe(tmp_path)
    with pytest.raises(RecipeError, match=r"no such recipe file \(bundled recipes: .*quick"):
        load_recipe(tmp_path / "nothere.yaml")
