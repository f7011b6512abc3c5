"""Everything that talks to the Hugging Face Hub (through ``huggingface_hub``).

Sources are local folders or repo ids, ``org/name`` or ``org/name@revision``.
"""

from __future__ import annotations

from pathlib import Path

from perta_hub.errors import HubError, InputError


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
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = split_repo_id(source)
    try:
        folder = Path(
            snapshot_download(repo_id, revision=revision, repo_type=repo_type, allow_patterns=allow_patterns)
        )
    except RevisionNotFoundError as err:
        raise HubError(f"revision {revision!r} does not exist in {repo_id}; check the branch, tag or sha") from err
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise HubError(
            f"{repo_id} was not found on {_endpoint()} or you have no access; check the name and your HF_TOKEN"
        ) from err
    except LocalEntryNotFoundError as err:
        raise HubError(
            f"{repo_id} is not in the local cache and the Hub cannot be reached (HF_HUB_OFFLINE or no "
            "network); connect, or pass a local folder"
        ) from err
    except HfHubHTTPError as err:
        raise HubError(f"downloading {repo_id} failed: {_one_line(err)}; try again later") from err
    except ValueError as err:  # malformed repo ids
        raise InputError(f"{source!r} is neither an existing folder nor a valid repo id: {err}") from err
    sha = folder.name if len(folder.name) == 40 else _resolve_sha(HfApi(), repo_id, revision, repo_type)
    return folder, sha


def _resolve_sha(api: object, repo_id: str, revision: str | None, repo_type: str) -> str:
    info = api.repo_info(repo_id, revision=revision, repo_type=repo_type)  # type: ignore[attr-defined]
    return str(info.sha)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _one_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
