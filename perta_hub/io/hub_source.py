"""The one place that decides "local path or Hub id" and downloads from the Hub (``huggingface_hub``).

Sources are local folders or repo ids, ``org/name`` or ``org/name@revision``. Downloads fetch only the
files a command needs into the HF cache and return the resolved commit sha; every file downloaded is checked
against what the Hub lists for it before it is used (:func:`check_snapshot`). Hub failures become one-line
:class:`~perta_hub.errors.HubError` messages that say what to do. Tokens are never printed.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, HubError, InputError

_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutException",
                   "NetworkError", "ReadError", "WriteError", "RemoteProtocolError", "ConnectionError",
                   "ConnectionRefusedError", "ConnectionResetError"}


def split_repo_id(source: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; no ``@`` gives revision None."""
    repo_id, _, revision = source.partition("@")
    return repo_id, (revision or None)


def looks_like_repo_id(source: str) -> bool:
    """True for ``name``/``org/name`` (optionally ``@rev``) strings that are not existing local paths."""
    if Path(source).exists():
        return False
    repo_id, _ = split_repo_id(source)
    parts = repo_id.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not source.startswith((".", "/", "~"))


def download(source: str, allow_patterns: list[str], repo_type: str = "model") -> tuple[Path, str]:
    """Download only the files matching ``allow_patterns`` of a Hub repo into the HF cache, each checked against
    what the Hub lists for it (:func:`check_snapshot`).

    Respects ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache location.
    Returns:
        (local snapshot folder, resolved commit sha).
    Raises:
        HubError: the download failed, or a file is not what the Hub lists (it is deleted from the cache).
        CheckpointError: a safetensors index names a file the repo does not hold.
    """
    from huggingface_hub import HfApi, snapshot_download

    repo_id, revision = split_repo_id(source)
    try:
        with _hub_errors(repo_id, revision, "downloading"):
            folder = Path(
                snapshot_download(repo_id, revision=revision, repo_type=repo_type, allow_patterns=allow_patterns)
            )
            sha = folder.name if len(folder.name) == 40 else _resolve_sha(HfApi(), repo_id, revision, repo_type)
            check_snapshot(folder, repo_id, sha, repo_type, allow_patterns)
    except ValueError as err:  # malformed repo ids
        raise InputError(f"{source!r} is neither an existing folder nor a valid repo id: {err}") from err
    return folder, sha


def _matches(name: str, patterns: list[str]) -> bool:
    """``name`` matches one of ``allow_patterns`` as ``snapshot_download`` matches them (``dir/``: all under it)."""
    return any(fnmatch.fnmatch(name, p + "*" if p.endswith("/") else p) for p in patterns)


def check_snapshot(folder: Path, repo_id: str, sha: str, repo_type: str, patterns: list[str]) -> None:
    """Check the files of a downloaded snapshot that match ``patterns`` against what the Hub lists for them at
    ``sha`` (``repo_info(files_metadata=True)``: size, sha256 or git blob id; :func:`~perta_hub.io.hub_promise.
    check_file`), and that every file a safetensors index names is in the repo. Offline (``HF_HUB_OFFLINE``, or the
    Hub unreachable and the snapshot cached) each file is checked against the name of its cache blob, the ETag the
    Hub sent with it.

    Raises:
        DownloadMismatch: a file is not what the Hub lists; it is deleted from the cache.
        CheckpointError: an index names a file the repo does not hold.
    """
    from huggingface_hub import HfApi

    from perta_hub.io.hub_promise import Promise, check_file, promises

    try:
        listed: dict[str, Promise] | None = promises(
            HfApi().repo_info(repo_id, revision=sha, repo_type=repo_type, files_metadata=True))
    except Exception as err:  # noqa: BLE001 - offline or unreachable: the cache's own record is checked
        if not _offline_or_unreachable(err):
            raise
        listed = None
    if listed is None:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            promise = Promise.of_blob_name(Path(path.resolve()).name) if path.is_symlink() else None
            if promise is not None and path.is_file() and _matches(name, patterns):
                check_file(path, promise, f"{repo_id}@{sha[:12]}/{name}")
        return
    for name, promise in sorted(listed.items()):
        path = folder / name
        if _matches(name, patterns) and path.is_file():
            check_file(path, promise, f"{repo_id}@{sha[:12]}/{name}")
            if name.endswith(".safetensors.index.json"):
                _check_index(path, name, listed, f"{repo_id}@{sha[:12]}")


def _check_index(path: Path, name: str, listed: dict[str, Any], where: str) -> None:
    """Every file the index ``name`` names is in the repo (else the download would stop at a missing shard)."""
    try:
        weight_map = json.loads(path.read_text()).get("weight_map")
    except (ValueError, AttributeError, OSError):
        return  # not an index: the reader says so, naming the file
    if not isinstance(weight_map, dict):
        return
    folder = name.rpartition("/")[0]
    for shard in dict.fromkeys(v for v in weight_map.values() if isinstance(v, str)):
        if f"{folder}/{shard}".lstrip("/") not in listed:
            raise CheckpointError(f"{where} is incomplete: {shard} named in {name} is not in the repo; ask the repo's "
                                  "owner to upload it (or pass another revision)")


def _offline_or_unreachable(err: BaseException) -> bool:
    """True for offline mode and for network failures (the snapshot came from the cache)."""
    return any(type(e).__name__ == "OfflineModeIsEnabled" or type(e).__name__ in _NETWORK_ERRORS
               or isinstance(e, ConnectionError) for e in _chain(err))


def _resolve_sha(api: Any, repo_id: str, revision: str | None, repo_type: str) -> str:
    info = api.repo_info(repo_id, revision=revision, repo_type=repo_type)
    return str(info.sha)


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, action: str) -> Iterator[None]:
    """Turn huggingface_hub / HTTP failures into one-line ``HubError``s that say what to do."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:  # noqa: BLE001 - classified below, re-raised when unknown
        message = _classify(err, repo_id, revision, action)
        if message is None:
            raise
        raise HubError(message) from err


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _classify(err: Exception, repo_id: str, revision: str | None, action: str) -> str | None:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = _endpoint()
    resume = " Re-run the same command: files already uploaded are not sent again."
    for item in _chain(err):
        name = type(item).__name__
        if isinstance(item, HubError):  # raised by our code inside a client call (e.g. a file object it reads)
            return str(item)
        if name == "OfflineModeIsEnabled":
            return f"{action} {repo_id} needs the network, but HF_HUB_OFFLINE is set; unset it and retry"
        if name == "LocalTokenNotFoundError":
            return f"{action} {repo_id} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`"
        if isinstance(item, RevisionNotFoundError):
            return f"revision {revision!r} does not exist in {repo_id}; check the branch, tag or commit sha"
        if isinstance(item, (RepositoryNotFoundError, GatedRepoError)):
            return (f"{repo_id} was not found on {endpoint} or your token has no access to it; check the name and "
                    "HF_TOKEN")
        if isinstance(item, LocalEntryNotFoundError):
            return (f"{repo_id} is not in the local cache and {endpoint} cannot be reached (HF_HUB_OFFLINE is set or "
                    "the network is down); connect and retry, or pass a local folder")
        if isinstance(item, HfHubHTTPError) and item.response is not None:
            status = item.response.status_code
            detail = (getattr(item, "server_message", None) or "").strip().splitlines()
            why = f" ({detail[0]})" if detail else ""
            if status == 401:
                return (f"{endpoint} rejected your Hugging Face token (401{why}) while {action} {repo_id}; set a valid "
                        "token in HF_TOKEN or run `hf auth login`")
            if status == 403:
                return (f"your token may not write to {repo_id} (403{why}); use a token with write access to that "
                        "namespace")
            if status == 412:
                return f"{repo_id} changed while {action} it (412{why});{resume}"
            if status >= 500:
                return f"{endpoint} failed with HTTP {status}{why} while {action} {repo_id}; nothing was lost.{resume}"
            return f"{action} {repo_id} failed with HTTP {status}{why}"
        if name in _NETWORK_ERRORS or isinstance(item, ConnectionError):
            return (f"cannot reach {endpoint} while {action} {repo_id} ({name}); check the network and HF_ENDPOINT."
                    + (resume if action == "pushing to" else ""))
        if isinstance(item, ValueError) and "Invalid metadata in README.md" in str(item):
            lines = [ln.strip("- ").strip() for ln in str(item).splitlines()[1:] if ln.strip()]
            return f"the Hub rejected the card README.md: {'; '.join(lines) or 'invalid metadata'}; fix the card"
    return None


def _endpoint() -> str:
    from huggingface_hub import HfApi

    return str(HfApi().endpoint)
