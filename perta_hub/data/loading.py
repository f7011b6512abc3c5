"""Question/answer data: where a data spec points, loading it as a ``datasets.Dataset``, subsampling.

A data spec is one of: a local ``.json`` / ``.jsonl`` / ``.parquet`` file; a Hub dataset with its config
(``locuslab/TOFU:forget10``, optionally ``repo@revision:config``); ``tofu:CONFIG`` for the copy of TOFU bundled
in ``perta_hub/resources/tofu/``; with a data dir, ``repo:config`` (or a bare config) resolves to
``<data_dir>/<config>.json``. :func:`locate` is the one place that decides which. ``datasets`` is imported
inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perta_hub.errors import DataError, InputError

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
BUNDLED_TOFU = Path(__file__).resolve().parents[1] / "resources" / "tofu"


def locate(spec: str, data_dir: str | Path | None = None) -> Path | None:
    """The local file a data spec names (the file itself, ``<data_dir>/<config>.*`` or the bundled TOFU file);
    None for a Hub dataset.

    Raises:
        DataError: ``data_dir`` is not a folder, a ``tofu`` spec without a config, or no file for the config.
    """
    path = Path(spec).expanduser()
    if path.suffix in LOCAL_SUFFIXES or path.is_file():
        return path
    repo, _, config = spec.partition(":")
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"--data-dir {folder} is not a folder; pass the folder of <split>.json files")
        return _find_config_file(folder, config or repo, spec)
    if repo.lower() == "tofu":
        if not config:
            raise DataError(f"{spec!r}: name a TOFU config, e.g. 'tofu:forget10'")
        return _find_config_file(BUNDLED_TOFU, config, spec)
    return None


def load_qa(spec: str, *, split: str | None = None, data_dir: str | Path | None = None) -> Any:
    """Load a QA dataset as a ``datasets.Dataset``.

    Args:
        spec: one of
            * a local ``.json`` / ``.jsonl`` / ``.parquet`` file (``datasets`` json/parquet loader);
            * a Hub dataset with its config, ``"locuslab/TOFU:forget10"`` (``load_dataset(repo, config,
              split=split or "train")``), optionally ``repo@revision:config``;
            * ``"tofu:forget10"``: the copy of TOFU bundled in ``perta_hub/resources/tofu/``.
        split: split to take (default ``"train"``; local files only have ``"train"``).
        data_dir: a local folder holding ``<config>.json`` (or .jsonl/.parquet) files; when given,
            ``repo:config`` specs (and bare config names such as ``"forget10"``) resolve to
            ``<data_dir>/<config>.json`` instead of the Hub.
    Raises:
        DataError: missing file, unknown split, empty dataset, or a Hub dataset that cannot be loaded.
    """
    path = locate(spec, data_dir)
    if path is not None:
        return _load_local(path, split)
    repo, _, config = spec.partition(":")
    return _load_hub(repo, config or None, split, spec)


def _find_config_file(folder: Path, config: str, spec: str) -> Path:
    for suffix in LOCAL_SUFFIXES:
        candidate = folder / f"{config}{suffix}"
        if candidate.is_file():
            return candidate
    present = sorted(p.stem for p in folder.iterdir() if p.suffix in LOCAL_SUFFIXES)
    raise DataError(
        f"{spec!r}: no {config}.json/.jsonl/.parquet in {folder}; available: {', '.join(present) or 'none'}"
    )


def _datasets() -> Any:
    """The ``datasets`` module, its progress bars set as the running command chose (off unless ``-v``)."""
    import datasets

    from perta_hub.runtime.progress import sync_datasets_bars

    sync_datasets_bars()
    return datasets


def _load_local(path: Path, split: str | None) -> Any:
    datasets = _datasets()

    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{path}: unsupported data file type {path.suffix!r}; use .json, .jsonl or .parquet")
    if split not in (None, "train"):
        raise DataError(f"{path}: a local file has only the split 'train', not {split!r}")
    builder = "parquet" if path.suffix == ".parquet" else "json"
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types for malformed files
        raise DataError(f"could not read {path} as {builder}: {_one_line(err)}") from err
    return _non_empty(ds, str(path))


def _load_hub(repo: str, config: str | None, split: str | None, spec: str) -> Any:
    datasets = _datasets()

    repo_id, _, revision = repo.partition("@")
    try:
        ds = datasets.load_dataset(repo_id, config, split=split or "train", revision=revision or None)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(f"{spec!r} has no split {split!r}: {_one_line(err)}") from err
        raise DataError(f"could not load {spec!r}: {_one_line(err)}") from err
    except Exception as err:
        raise DataError(
            f"could not load the Hub dataset {spec!r} ({_one_line(err)}); check the name and config, or "
            "pass a local copy with --data-dir"
        ) from err
    return _non_empty(ds, spec)


def _non_empty(ds: Any, what: str) -> Any:
    if len(ds) == 0:
        raise DataError(f"{what} is empty; pass a dataset with at least one example")
    return ds


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def subsample(
    dataset: Any, fraction: float | None = None, max_examples: int | None = None, seed: int = 0
) -> Any:
    """A seeded random subset, in the original row order.

    Args:
        dataset: a ``datasets.Dataset`` (anything with ``len`` and ``select``).
        fraction: keep ``round(fraction * len)`` rows (0 < fraction <= 1), at least one.
        max_examples: keep at most this many rows (>= 1).
        seed: seed of the random choice (``random.Random``); the same seed gives the same rows.
    Both limits may be given (the smaller count wins); neither returns ``dataset`` unchanged.
    """
    import random

    n = len(dataset)
    keep = n
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {fraction}")
        keep = max(1, round(fraction * n))
    if max_examples is not None:
        if max_examples < 1:
            raise InputError(f"max_examples must be >= 1, got {max_examples}")
        keep = min(keep, max_examples)
    if keep >= n:
        return dataset
    indices = sorted(random.Random(seed).sample(range(n), keep))
    return dataset.select(indices)
