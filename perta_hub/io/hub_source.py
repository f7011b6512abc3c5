"""The one place that decides "local path or Hub id" and downloads from the Hub (``huggingface_hub``).

Sources are local folders or repo ids, ``org/name`` or ``org/name@revision``. Downloads fetch only the
files a command needs into the HF cache and return the resolved commit sha. Hub failures become one-line
:class:`~perta_hub.errors.HubError` messages that say what to do. Tokens are never printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perta_hub.errors import HubError, InputError

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
    """Download only the files matching ``allow_patterns`` of a Hub repo into the HF cache.

    Respects ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache location.
    Returns:
        (local snapshot folder, resolved commit sha).
    """
    from huggingface_hub import HfApi, snapshot_download

    repo_id, revision = split_repo_id(source)
    try:
        with _hub_errors(repo_id, revision, "downloading"):
            folder = Path(
                snapshot_download(repo_id, revision=revision, repo_type=repo_type, allow_patterns=allow_patterns)
            )
            sha = folder.name if len(folder.name) == 40 else _resolve_sha(HfApi(), repo_id, revision, repo_type)
    except ValueError as err:  # malformed repo ids
        raise InputError(f"{source!r} is neither an existing folder nor a valid repo id: {err}") from err
    return folder, sha


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


