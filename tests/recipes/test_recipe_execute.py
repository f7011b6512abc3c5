"""A command step is its command line: every step of the bundled recipes renders to a line its command parses,
with required options, on/off flags, pairs and repeats written as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from perta_hub.cli import main
from perta_hub.recipes import load_recipe
from perta_hub.recipes.bundled import bundled_recipes
from perta_hub.recipes.execute import command_line
from perta_hub.recipes.kinds import kinds
from perta_hub.recipes.values import Ref


def stand_in(value):
    """A step's value with each reference replaced by a path."""
    if isinstance(value, Ref):
        return f"/in/{value.name}"
    if isinstance(value, tuple):
        return tuple(stand_in(v) for v in value)
    return value


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_every_bundled_step_is_a_command_line_its_command_parses(name):
    recipe = load_recipe(bundled_recipes()[name], sets=["models.base=/in/base"] if name.startswith("smollm2") else [])
    for step in recipe.steps.values():
        if step.kind.local:
            continue
        values = {k: stand_in(v) for k, v in step.effective().items()}
        argv = command_line(step.kind, values, Path("/out") / step.name)
        cmd = main.commands[argv[0]]
        ctx = cmd.make_context(argv[0], argv[1:])  # raises on anything the command line refuses
        for key in step.kind.keys.values():
            if key.required:
                assert ctx.params[key.field] not in (None, ()), (name, step.name, key.name)


def test_values_render_as_a_user_types_them():
    apply, tune, push = kinds()["apply"], kinds()["tune"], kinds()["push"]
    argv = command_line(apply, {"model": "/t", "task_vector": "/tv", "alphas": (1, 2.5), "p": 2.0, "lam": 1e-05,
                                "device": "auto"}, Path("/o"))
    assert argv == ["apply", "/t", "--task-vector", "/tv", "--alpha", "1", "--alpha", "2.5", "--p", "2.0",
                    "--lam", "1e-05", "-o", "/o"]
    argv = command_line(tune, {"model": "/t", "task_vector": "/tv", "forget": "f", "retain": "r",
                               "alpha_range": (0.5, 6), "weights": ("none", "/wm")}, Path("/o"))
    assert argv[argv.index("--alpha-range"):][:3] == ["--alpha-range", "0.5", "6"]
    assert argv.count("--weights") == 2
    assert command_line(push, {"folder": "/f", "repo": "me/x", "private": False}, Path("/o")) == \
        ["push", "/f", "me/x", "--public"]
    evaluate = command_line(kinds()["evaluate"], {"models": ("/a", "/b"), "retain_logs": "/r.json"}, Path("/e"))
    assert evaluate == ["evaluate", "/a", "/b", "--retain-logs", "/r.json", "-o", "/e/tofu.json", "--overwrite",
                        "--plot", "/e/tofu.png"]
