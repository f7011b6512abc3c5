"""The streaming mode checks every input file against what the Hub lists for it.

The local Hub lies (:meth:`tests.hub_server.HubServer.lie`: other bytes of the same size, a header read by range
that is not the file's, a ``200`` to a range request, short content, an index naming a missing shard) while its
API keeps listing the truth; each lie stops ``apply --stream --push`` with one exact line, exit code 1, nothing
committed or uploaded to the output repo and no output shard left on disk. Honest servers without range support
are followed correctly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from perta_hub.io.hub_promise import DownloadMismatch
from tests.hub_server import HubServer
from tests.stream.conftest import Published
from tests.stream.test_stream import apply_args, error_line, run_cli

TAIL = ("they were discarded and nothing was published: re-run the same command; if it repeats, the server or a "
        "proxy on the way is serving other bytes")


def mismatch_line(where: str, what: str) -> str:
    return f"Error: {where}: the downloaded bytes are not what the Hub lists ({what}); {TAIL}"


def at(hub: HubServer, repo: str, name: str) -> str:
    return f"{repo}@{hub.repo(repo).refs['main'][:12]}/{name}"


def shards(hub: HubServer, repo: str) -> dict[str, bytes]:
    return {k: v for k, v in sorted(hub.files(repo).items()) if k.endswith(".safetensors")}


def stream(published: Published, out: Path) -> Any:
    return run_cli(*apply_args(published, out, "--push", "user/out", "--stream"))


def assert_nothing_published(hub: HubServer, uploads_before: int, out: Path) -> None:
    """No commit in the output repo beyond its creation, no LFS object uploaded, no output shard on disk."""
    if ("model", "user/out") in hub.repos:
        assert [c.title for c in hub.repo("user/out").commits.values()] == ["initial commit"]
    assert hub.uploaded[uploads_before:] == []
    assert not list(out.glob("*.safetensors")) and not (out / "perta_config.json").exists()


def data_start(blob: bytes) -> int:
    """Where a safetensors file's first tensor begins (its first byte: the lowest of a value, still finite if
    inverted)."""
    return 8 + struct.unpack("<Q", blob[:8])[0]


def first_named(hub: HubServer, repo: str, index: str = "model.safetensors.index.json") -> str:
    """The file an index names first (the first header read)."""
    return next(iter(dict.fromkeys(json.loads(hub.files(repo)[index])["weight_map"].values())))


# The weight map's importance files are read by every output shard: a lie about one of them leaves nothing to
# upload before it is found (a lie about a file only later shards read lets the earlier ones be pre-uploaded to
# LFS, uncommitted, from inputs that passed).
FORGET = "importance_forget-00001-of-00001.safetensors"


def test_other_bytes_of_the_same_size_are_refused(hub: HubServer, published: Published, tmp_path: Path) -> None:
    """A proxy serving other bytes of the listed size (one tensor byte changed): the sha256, hashed as the bytes
    arrive, differs from the LFS oid; the file is deleted, so the re-run (honest server) downloads it again."""
    data = hub.files("user/wm")[FORGET]
    lied = bytearray(data)
    lied[data_start(data)] ^= 0xFF
    hub.lie("other-bytes", re.escape(FORGET), at=data_start(data))
    before = len(hub.uploaded)
    result = stream(published, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == mismatch_line(at(hub, "user/wm", FORGET), (
        f"sha256 {hashlib.sha256(lied).hexdigest()[:12]}, listed {hashlib.sha256(data).hexdigest()[:12]}"))
    assert_nothing_published(hub, before, tmp_path / "out")
    assert not list((tmp_path / ".out.perta-inputs").rglob(FORGET))
    hub.lies.clear()
    again = stream(published, tmp_path / "out")
    assert again.exit_code == 0, again.output
    assert shards(hub, "user/out")


def test_a_header_read_by_range_that_is_not_the_files_is_refused(hub: HubServer, published: Published,
                                                                  tmp_path: Path) -> None:
    """Range reads (the headers the merge is planned from) give layer 0's k_proj the bytes of its v_proj and back
    (same shape), the download is the true file: its first bytes differ from the header read, which stops the run
    as they arrive, before a tensor of that file is read."""
    data = hub.files("user/wm")[FORGET]
    pair = (b'"model.layers.0.self_attn.k_proj.weight"', b'"model.layers.0.self_attn.v_proj.weight"')
    hub.lie("other-bytes", re.escape(FORGET), requests="range", swap=pair)
    served = hub.lies[0].content(data)
    first = next(i for i, (a, b) in enumerate(zip(data, served, strict=True)) if a != b)
    assert first < data_start(data)
    before = len(hub.uploaded)
    result = stream(published, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == mismatch_line(
        at(hub, "user/wm", FORGET), f"byte {first} differs from the header read by range when it was opened")
    assert_nothing_published(hub, before, tmp_path / "out")


def test_a_200_with_part_of_the_file_is_refused(hub: HubServer, published: Published, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A range request (a header read) answered 200 with only the bytes asked for: a 200 is the whole file, and
    its length is not the listed size; refused at the first header read, before anything is written."""
    from perta_hub.hub import remote_headers

    monkeypatch.setattr(remote_headers, "FIRST_READ", 2048)  # these tiny shards are smaller than 100 kB
    hub.lie("range-200", r"\.safetensors$", whole=False)
    name = first_named(hub, "user/target")
    data = hub.files("user/target")[name]
    result = stream(published, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == mismatch_line(at(hub, "user/target", name),
                                               f"the server sends 2048 bytes, listed {len(data)}")
    assert not (tmp_path / "out").exists() and ("model", "user/out") not in hub.repos


def test_short_content_is_refused(hub: HubServer, published: Published, tmp_path: Path) -> None:
    """A file served cut to half its listed size (its Content-Range total says so): refused at its header read."""
    name = first_named(hub, "user/target")
    data = hub.files("user/target")[name]
    hub.lie("short", r"\.safetensors$")
    half = len(data) // 2
    result = stream(published, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == mismatch_line(at(hub, "user/target", name), (
        f"asked for the bytes from 0 of {len(data)}, the server sent bytes 0-{half - 1}/{half}"))
    assert not (tmp_path / "out").exists() and ("model", "user/out") not in hub.repos


def test_an_index_naming_missing_files_is_refused(hub: HubServer, published: Published, tmp_path: Path) -> None:
    """The index served names a shard the repo does not hold: it is not the index the Hub lists (size, git blob
    id); a repo whose listed index names a missing shard is refused too, naming the shard."""
    from huggingface_hub import HfApi

    index = hub.files("user/target")["model.safetensors.index.json"]
    hub.lie("index-missing", r"model\.safetensors\.index\.json$")
    served = hub.lies[0].content(index)
    result = stream(published, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == mismatch_line(at(hub, "user/target", "model.safetensors.index.json"),
                                               f"{len(served)} bytes, listed {len(index)}")
    assert not (tmp_path / "out").exists() and ("model", "user/out") not in hub.repos

    hub.lies.clear()  # an honest server, a repo whose index names a shard it does not hold
    HfApi().upload_file(path_or_fileobj=served, path_in_repo="model.safetensors.index.json", repo_id="user/target")
    result = stream(published, tmp_path / "out")
    assert result.exit_code == 1
    assert error_line(result) == ("Error: user/target is incomplete: model-missing.safetensors named in "
                                  "model.safetensors.index.json is missing; re-upload it")
    assert not (tmp_path / "out").exists() and ("model", "user/out") not in hub.repos


# -- the fetch and the header reads on their own ----------------------------------------------------------------


def _one_file_repo(size: int) -> tuple[Any, bytes]:
    from huggingface_hub import HfApi

    from perta_hub.hub.remote_headers import resolve_repo

    data = os.urandom(size)
    HfApi().create_repo("user/one")
    HfApi().upload_file(path_or_fileobj=data, path_in_repo="w.safetensors", repo_id="user/one")
    return resolve_repo("user/one"), data


def _fetch(repo: Any, out: Path, size: int) -> None:
    from perta_hub.hub.stream_fetch import Arrivals, fetch_into

    fetch_into(repo, out, size, Arrivals(threading.Condition()), lambda: None)


def gets(hub: HubServer) -> int:
    """GETs of w.safetensors the server logged, once their number holds still (an answer is logged when it is
    sent, or when the server finds that the client stopped reading it)."""
    import time

    count = -1
    while count != (count := len(hub.requests("GET", "w.safetensors"))):
        time.sleep(0.3)
    return count


def test_a_server_without_range_support_is_followed(hub: HubServer, tmp_path: Path) -> None:
    """Range requests answered 200 with the whole file (no Content-Range): a header read takes its bytes from it,
    a resumed download starts again from byte 0; the result is checked and right."""
    from perta_hub.hub.remote_headers import read_range

    repo, data = _one_file_repo(3 << 20)
    hub.lie("range-200", "w.safetensors")
    assert read_range(repo, "w.safetensors", 1000, 2000) == data[1000:2000]
    hub.cut(1 << 20, times=1)
    served = hub.served
    _fetch(repo, tmp_path / "w.safetensors", len(data))
    assert (tmp_path / "w.safetensors").read_bytes() == data
    assert hub.served - served == (3 + 3) << 20  # 1 MiB before the cut, then the whole file again (sent 3 MiB)


def test_the_fetch_refuses_each_lie_in_one_line(hub: HubServer, tmp_path: Path) -> None:
    """``fetch_into`` on its own: other bytes (after a resume that re-hashes the prefix on disk), a 200 with part
    of the file, short content; each one line, at once (no retries), the file deleted."""
    from perta_hub.hub.remote_headers import read_range

    repo, data = _one_file_repo(3 << 20)
    where = f"user/one@{repo.sha[:12]}/w.safetensors"
    out = tmp_path / "w.safetensors"
    lied = bytearray(data)
    lied[-1] ^= 0xFF
    hub.lie("other-bytes", "w.safetensors", at=-1)
    hub.cut(1 << 20, times=1)  # a broken transfer: the rest comes by a range request
    with pytest.raises(DownloadMismatch) as err:
        _fetch(repo, out, len(data))
    assert str(err.value) == mismatch_line(where, f"sha256 {hashlib.sha256(lied).hexdigest()[:12]}, listed "
                                                  f"{hashlib.sha256(data).hexdigest()[:12]}")[len("Error: "):]
    assert not out.exists()
    hub.lies.clear()

    prefix = bytearray(data[: 2 << 20])
    prefix[100] ^= 0xFF
    out.write_bytes(prefix)  # an interrupted run's prefix, tampered: re-hashed on resume
    with pytest.raises(DownloadMismatch, match="sha256"):
        _fetch(repo, out, len(data))
    assert not out.exists()

    out.write_bytes(data[: 1 << 20])
    hub.lie("range-200", "w.safetensors", whole=False)
    before = gets(hub)
    with pytest.raises(DownloadMismatch) as err:
        _fetch(repo, out, len(data))
    assert str(err.value).startswith(f"{where}: the downloaded bytes are not what the Hub lists (the server sends "
                                     f"{2 << 20} bytes, listed {3 << 20})")
    assert gets(hub) == before + 1 and not out.exists()  # refused at the first answer, no retry
    with pytest.raises(DownloadMismatch, match=f"sends 1000 bytes, listed {3 << 20}"):
        read_range(repo, "w.safetensors", 1000, 2000)
    hub.lies.clear()

    hub.lie("short", "w.safetensors")
    with pytest.raises(DownloadMismatch, match=re.escape(f"(the server sends {3 << 19} bytes, listed {3 << 20})")):
        _fetch(repo, out, len(data))
    assert gets(hub) == before + 3 and not out.exists()
    with pytest.raises(DownloadMismatch, match=re.escape(f"the server sent bytes 0-99/{3 << 19})")):
        read_range(repo, "w.safetensors", 0, 100)
