"""The recipes shipped with perta-hub (``perta_hub/resources/recipes/``; ``examples/recipes/`` holds the same files).

``quick.yaml`` and ``tiny.yaml``: the tiny demo (``demo --quick``, ``demo``); ``smollm2.yaml`` and
``smollm2-quick.yaml``: the real-model experiment of docs/results-weak-target.md (``demo --model M``, ``demo --model M
--quick``); ``smollm2-memorise.yaml`` and ``smollm2-memorised.yaml``: the strongly memorised target and the 3-seed
experiment of docs/results.md; ``own-model.yaml``: a template for your own model and data.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[1] / "resources" / "recipes"


def bundled_recipes() -> dict[str, Path]:
    """Name (file name without ``.yaml``) -> path of every bundled recipe."""
    return {p.stem: p for p in sorted(BUNDLED.glob("*.yaml"))}


def find_recipe(name: str) -> Path:
    """``name`` as a file when it is one, else the bundled recipe of that name (``quick`` or ``quick.yaml``; a folder
    of that name beside it does not hide it)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml")
    return bundled_recipes().get(stem, path) if path.parent == Path(".") else path
