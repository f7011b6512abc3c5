"""`perta-hub demo` is a bundled recipe run by `perta-hub run`: which recipe and which changes."""

from __future__ import annotations

from perta_hub.demo import demo_recipe
from perta_hub.recipes import load_recipe
from perta_hub.recipes.bundled import BUNDLED


def test_each_demo_form_runs_a_bundled_recipe():
    assert demo_recipe() == (BUNDLED / "tiny.yaml", [])
    assert demo_recipe(quick=True, device="cpu") == (BUNDLED / "quick.yaml", ["defaults.all.device=cpu"])
    path, sets = demo_recipe(model="/m y/model")
    assert path == BUNDLED / "smollm2.yaml"
    recipe = load_recipe(path, sets=sets)
    assert recipe.models["base"] == "/m y/model"
    assert demo_recipe(model="org/m", quick=True)[0] == BUNDLED / "smollm2-quick.yaml"


def test_the_quick_recipe_is_the_quick_demo():
    recipe = load_recipe(BUNDLED / "quick.yaml", sets=["defaults.all.device=cpu"])
    init = recipe.steps["init"].values
    assert (init["vocab_size"], init["hidden_size"], init["layers"]) == (1024, 96, 2)
    target = recipe.steps["target"].effective()
    assert (target["epochs"], target["lr"], target["batch_size"], target["device"]) == (40, 3e-3, 16, "cpu")
    assert recipe.steps["tv"].values["alphas"] == (1, 2, 4)
    assert recipe.steps["eval"].values["max_examples"] == 40
    assert recipe.torch_threads == 1
