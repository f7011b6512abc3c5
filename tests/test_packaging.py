"""The release holds the whole package: every folder of modules is discovered, resources are package data.

The full check (build, twine, non-editable install, CLI from the wheel) is `.ci/release-check`; this one is the
fast guard against the mistake that broke the 0.1.0 wheel (a folder of modules left out by discovery).
"""

from __future__ import annotations

from pathlib import Path

from setuptools.config.setupcfg import read_configuration

REPO = Path(__file__).resolve().parents[1]


def _configured() -> dict:
    return read_configuration(REPO / "setup.cfg")


def test_every_module_folder_is_a_released_package() -> None:
    from setuptools import find_namespace_packages

    find = _configured()["options"]["packages"]  # resolved by setuptools from setup.cfg's find_namespace:
    discovered = set(find) if isinstance(find, list) else set(find_namespace_packages(str(REPO)))
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "perta_hub").rglob("*.py")}
    assert folders, "no modules found"
    assert folders <= discovered, f"left out of the release: {sorted(folders - discovered)}"
    assert not {p for p in discovered if not p.startswith("perta_hub")}, "tests or tools would be released"


def test_resources_and_metadata_are_declared() -> None:
    from perta_hub._version import __version__

    config = _configured()
    data = config["options"]["package_data"]["perta_hub"]
    assert "py.typed" in data and (REPO / "perta_hub" / "py.typed").is_file()
    assert any((REPO / "perta_hub").glob(pattern) for pattern in data if "resources" in pattern)
    meta = config["metadata"]
    assert meta["version"] == __version__
    assert "LICENSE" in meta["license_files"] and (REPO / "LICENSE").is_file()
    assert config["options"]["python_requires"]
    assert "perta-hub = perta_hub.cli:main" in config["options"]["entry_points"]["console_scripts"]


def test_no_public_function_shares_a_name_with_a_subpackage() -> None:
    """``perta_hub.tune(...)`` and ``perta_hub.verify(...)`` stay functions whatever was imported before: no
    exported name is also a module of the package (importing ``perta_hub.X.sub`` would rebind ``perta_hub.X``)."""
    import pkgutil

    import perta_hub

    modules = {m.name for m in pkgutil.iter_modules(perta_hub.__path__)}
    assert not modules & set(perta_hub._EXPORTS), sorted(modules & set(perta_hub._EXPORTS))
