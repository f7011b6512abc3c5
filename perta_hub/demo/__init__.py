"""``perta-hub demo``: a bundled recipe run by ``perta-hub run`` (docs/demo.md, docs/recipes.md).

Without ``--model``: TOFU-mini, offline, on a laptop (``tiny.yaml``; ``--quick``: ``quick.yaml``). A small Llama
memorises some fictitious TOFU authors (the **target**); a second one learns the same authors without the forget
authors (the **retain** model, the reference for forget quality). Then a task vector from fine-tuning the target on
the forget set, grad and fisher weight maps, ``apply`` over an alpha sweep for TV, PerTA-grad and PerTA-fisher, and
``evaluate`` on every output.

With ``--model M``: the experiment of docs/results-weak-target.md on the pretrained model M (``smollm2.yaml``; ``--quick``:
``smollm2-quick.yaml``), PerTA beside GradAscent, GradDiff and NPO.

Either way the report is ``OUT/results.json``, ``results.md``, ``results.png`` and ``report.html``; ``--seeds K`` runs the
unlearning stage once per seed (``OUT/seed-<s>/``). There is no other pipeline: ``perta-hub run`` on the same
recipe (``perta_hub/resources/recipes/``, copied in ``examples/recipes/``) does the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perta_hub.options.demo import DEMO


def demo_recipe(*, quick: bool = DEMO.quick, device: str = DEMO.device, model: str | None = DEMO.model
                ) -> tuple[Path, list[str]]:
    """The bundled recipe a demo runs and its ``--set`` changes (the model, the device)."""
    from perta_hub.recipes.bundled import bundled_recipes

    recipes = bundled_recipes()
    if model is None:
        path, sets = recipes["quick" if quick else "tiny"], []
    else:
        path, sets = recipes["smollm2-quick" if quick else "smollm2"], [f"models.base={json.dumps(model)}"]
    if device != "auto":
        sets.append(f"defaults.all.device={device}")
    return path, sets


def run_demo(out_dir: str | Path = DEMO.out_dir, *, quick: bool = DEMO.quick, device: str = DEMO.device,
             model: str | None = DEMO.model, seeds: int | None = DEMO.seeds,
             echo: Callable[[str], None] = print, command_flags: Sequence[str] = ()) -> dict[str, Any]:
    """Run the demo's recipe into ``out_dir`` (re-running resumes: finished steps are reused).

    Args:
        model: a pretrained model (Hub id or folder) to fine-tune instead of the tiny Llama trained from
            scratch; then GradAscent, GradDiff and NPO run beside TV and PerTA.
        seeds: run the unlearning stage once per seed 0..K-1 (``OUT/seed-<s>/``).
        echo: where the run's lines go; command_flags: ``-q``/``-v`` for every command.
    Returns:
        the report's ``results.json`` (with seeds: ``{"seeds": {seed: its results.json}}``).
    """
    from perta_hub.recipes import load_recipe, run_recipe

    path, sets = demo_recipe(quick=quick, device=device, model=model)
    result = run_recipe(load_recipe(path, sets=sets, seeds=seeds), out_dir, echo=echo, command_flags=command_flags)
    return json.loads((result.out / "results.json").read_text())
