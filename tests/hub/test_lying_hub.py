"""Every file ``snapshot_download`` brings (:func:`perta_hub.io.hub_source.download`: ``apply``, ``verify`` and the
artifact readers with Hub ids) is checked against what the Hub lists for it before it is used.

The local Hub lies (:meth:`tests.hub_server.HubServer.lie`) while its API keeps listing the truth: other bytes of
the same size (an LFS file: sha256; a file in git: git blob id), short content, an index naming a shard the repo
does not hold. Each is one exact line; the bad file leaves the HF cache, so a re-run downloads it again; offline,
the cache's own blob names are the promise.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from perta_hub.errors import CheckpointError
from perta_hub.io.hub_promise import DownloadMismatch
from tests.hub.test_hub import error_line, run_cli
from tests.hub_server import HubServer, git_blob_oid

TAIL = ("they were discarded and nothing was published: re-run the same command; if it repeats, the server or a "
        "proxy on the way is serving other bytes")
PATTERNS = ["*.safetensors", "*.json"]


def mismatch(where: str, what: str) -> str:
    return f"{where}: the downloaded bytes are not what the Hub lists ({what}); {TAIL}"


@pytest.fixture
def model(hub: HubServer, make_model: Any) -> tuple[str, dict[str, bytes]]:
    """``user/m`` (several shards) on the local Hub: (``user/m@sha12``, its files)."""
    from perta_hub.hub.publish import push_folder

    push_folder(make_model("model", max_shard_size="40KB"), "user/m")
    return f"user/m@{hub.repo('user/m').refs['main'][:12]}", hub.files("user/m")


def first_shard(files: dict[str, bytes]) -> tuple[str, bytes]:
    return next((k, v) for k, v in sorted(files.items()) if k.endswith(".safetensors"))


def test_other_bytes_of_an_lfs_file_are_refused_and_leave_the_cache(hub: HubServer, model: Any) -> None:
    from perta_hub.io.hub_source import download

    at, files = model
    name, data = first_shard(files)
    lied = bytearray(data)
    lied[-1] ^= 0xFF
    hub.lie("other-bytes", re.escape(name))
    with pytest.raises(DownloadMismatch) as err:
        download("user/m", PATTERNS)
    assert str(err.value) == mismatch(f"{at}/{name}", f"sha256 {hashlib.sha256(lied).hexdigest()[:12]}, listed "
                                                      f"{hashlib.sha256(data).hexdigest()[:12]}")
    blobs = Path(os.environ["HF_HUB_CACHE"]) / "models--user--m" / "blobs"
    assert not (blobs / hashlib.sha256(data).hexdigest()).exists()  # the blob holding other bytes is gone
    hub.lies.clear()
    folder, _ = download("user/m", PATTERNS)  # the re-run downloads it again
    assert (folder / name).read_bytes() == data


def test_other_bytes_of_a_git_file_are_refused(hub: HubServer, model: Any) -> None:
    from perta_hub.io.hub_source import download

    at, files = model
    data = files["config.json"]
    lied = bytearray(data)
    lied[-1] ^= 0xFF
    hub.lie("other-bytes", r"^config\.json$", at=-1)
    with pytest.raises(DownloadMismatch) as err:
        download("user/m", PATTERNS)
    assert str(err.value) == mismatch(f"{at}/config.json", f"git blob id {git_blob_oid(bytes(lied))[:12]}, listed "
                                                           f"{git_blob_oid(data)[:12]}")


def test_short_content_is_refused(hub: HubServer, model: Any) -> None:
    """The file is served cut to half its size, the answer's headers agreeing (so the client's own size check,
    which trusts them, passes): its size is not the listed one."""
    from perta_hub.io.hub_source import download

    at, files = model
    name, data = first_shard(files)
    hub.lie("short", re.escape(name))
    with pytest.raises(DownloadMismatch) as err:
        download("user/m", PATTERNS)
    assert str(err.value) == mismatch(f"{at}/{name}", f"{len(data) // 2} bytes, listed {len(data)}")


def test_an_index_naming_missing_files_is_refused(hub: HubServer, model: Any) -> None:
    """Served in place of the listed index: refused by size; listed by the repo itself: one line naming the shard
    the repo does not hold (not a cache path to re-download)."""
    from huggingface_hub import HfApi

    from perta_hub.io.hub_source import download

    at, files = model
    index = files["model.safetensors.index.json"]
    rule = hub.lie("index-missing", r"model\.safetensors\.index\.json$")
    served = rule.content(index)
    with pytest.raises(DownloadMismatch) as err:
        download("user/m", PATTERNS)
    assert str(err.value) == mismatch(f"{at}/model.safetensors.index.json", f"{len(served)} bytes, listed {len(index)}")
    hub.lies.clear()
    HfApi().upload_file(path_or_fileobj=served, path_in_repo="model.safetensors.index.json", repo_id="user/m")
    with pytest.raises(CheckpointError) as err:
        download("user/m", PATTERNS)
    sha = hub.repo("user/m").refs["main"][:12]
    assert str(err.value) == (f"user/m@{sha} is incomplete: model-missing.safetensors named in "
                              "model.safetensors.index.json is not in the repo; ask the repo's owner to upload it (or "
                              "pass another revision)")


def test_offline_the_cache_blob_names_are_the_promise(hub: HubServer, model: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached blob whose bytes changed since (same size) is refused offline, with no request, against the ETag
    it was stored under."""
    from huggingface_hub import constants

    from perta_hub.io.hub_source import download

    at, files = model
    name, data = first_shard(files)
    folder, _ = download("user/m", PATTERNS)
    blob = (folder / name).resolve()
    lied = bytearray(data)
    lied[-1] ^= 0xFF
    blob.write_bytes(bytes(lied))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.log)
    with pytest.raises(DownloadMismatch) as err:
        download("user/m", PATTERNS)
    assert str(err.value) == mismatch(f"{at}/{name}", f"sha256 {hashlib.sha256(lied).hexdigest()[:12]}, listed "
                                                      f"{hashlib.sha256(data).hexdigest()[:12]}")
    assert len(hub.log) == before and not blob.exists()


def test_apply_from_the_hub_refuses_other_bytes(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    """``apply`` with Hub inputs (downloaded whole): one line, exit code 1, no output folder, nothing pushed."""
    from perta_hub.hub.publish import push_folder
    from perta_hub.merge.task_vector import task_vector

    target, tuned = make_model("target", seed=0), make_model("tuned", seed=1)
    push_folder(target, "user/target")
    push_folder(task_vector(target, tuned, tmp_path / "tv", max_shard_size="40KB", progress=False), "user/tv")
    name, data = first_shard(hub.files("user/tv"))
    lied = bytearray(data)
    lied[-2] ^= 0xFF
    hub.lie("other-bytes", re.escape(name), at=-2)
    result = run_cli("apply", "user/target", "--task-vector", "user/tv", "--alpha", "1", "-o", str(tmp_path / "out"),
                     "--device", "cpu", "--push", "user/out")
    assert result.exit_code == 1
    sha = hub.repo("user/tv").refs["main"][:12]
    assert error_line(result) == "Error: " + mismatch(
        f"user/tv@{sha}/{name}",
        f"sha256 {hashlib.sha256(lied).hexdigest()[:12]}, listed {hashlib.sha256(data).hexdigest()[:12]}")
    assert not (tmp_path / "out").exists() and ("model", "user/out") not in hub.repos
