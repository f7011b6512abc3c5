"""What a data argument was: the description recorded in ``perta_config.json`` (finetune, compute-weights).

:func:`describe_data` is the one source of the keys ``spec``, ``dataset_id`` (the Hub dataset, for the card),
``config``, ``local_file`` / ``bundled`` / ``data_dir``, and the data's identity: ``source`` (the absolute path
of the local file read, or ``org/name@<commit sha>`` of a Hub dataset) and ``files`` (path and sha256 of every
local file read), so that a card can be checked against the data from any working directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from perta_hub.data.loading import LOCAL_SUFFIXES, locate


def describe_data(spec: str, data_dir: str | Path | None = None) -> dict[str, Any]:
    """The description of a data spec (see the module docstring); call it after the data has loaded.

    Returns:
        ``{"spec", "dataset_id", "config", ("local_file" | "bundled" | "data_dir"), "source", "files"}`` with
        ``files = [{"path": absolute path, "sha256": hex}]`` (empty for a Hub dataset).
    """
    path = Path(spec).expanduser()
    info: dict[str, Any]
    if path.suffix in LOCAL_SUFFIXES or path.is_file():
        info = {"spec": spec, "dataset_id": None, "config": None, "local_file": str(path)}
    else:
        repo, _, config = spec.partition(":")
        repo_id = repo.partition("@")[0]
        if repo_id.lower() == "tofu":  # the bundled copy of the Hub dataset
            info = {"spec": spec, "dataset_id": "locuslab/TOFU", "config": config, "bundled": True}
        else:
            info = {"spec": spec, "dataset_id": repo_id if "/" in repo_id else None, "config": config or None}
            if data_dir is not None:
                info["data_dir"] = str(data_dir)
    return {**info, **data_identity(spec, data_dir)}


def data_identity(spec: str, data_dir: str | Path | None = None) -> dict[str, Any]:
    """``{"source": ..., "files": [{"path", "sha256"}]}`` of the data a spec resolves to (as :func:`load_qa` reads it)."""
    local = locate(spec, data_dir)
    if local is not None:
        resolved = local.resolve()
        return {"source": str(resolved), "files": [{"path": str(resolved), "sha256": file_sha256(resolved)}]}
    repo_id, _, revision = spec.partition(":")[0].partition("@")
    sha = _hub_dataset_sha(repo_id, revision or None)
    return {"source": f"{repo_id}@{sha}" if sha else repo_id, "files": []}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _hub_dataset_sha(repo_id: str, revision: str | None) -> str | None:
    """The commit sha a Hub dataset's revision resolves to; offline or unreachable: the revision as given."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo_id, revision=revision).sha or revision
    except Exception:  # offline mode, no network, private repo: record what was asked for
        return revision
