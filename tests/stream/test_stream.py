"""``apply --stream --push`` from Hub ids against the local Hub: same bytes as apply + push, resumable, bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from tests.hub_server import HubServer
from tests.stream.conftest import Published


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_line(result: Any) -> str:
    """The one ``Error:`` line (the Hub client's download bars may precede it on the same line)."""
    lines = ["Error:" + line.split("Error:", 1)[1] for line in result.output.splitlines() if "Error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def apply_args(p: Published, out: Path, *extra: str) -> list[str]:
    return ["apply", p.target, "--task-vector", p.task_vector, "--weights", p.weights, "--alpha", "0.7",
            "--max-shard-size", "12KB", "-o", str(out), *extra]


def weight_bytes(hub: HubServer, repo: str) -> int:
    return sum(len(v) for k, v in hub.files(repo).items() if k.endswith(".safetensors"))


def test_stream_is_byte_identical_to_apply_then_push(hub: HubServer, published: Published, tmp_path: Path) -> None:
    local = run_cli(*apply_args(published, tmp_path / "local", "--push", "user/out-local"))
    assert local.exit_code == 0, local.output
    streamed = run_cli(*apply_args(published, tmp_path / "streamed", "--push", "user/out-stream", "--stream"))
    assert streamed.exit_code == 0, streamed.output
    a, b = hub.files("user/out-local"), hub.files("user/out-stream")
    assert sorted(a) == sorted(b)
    shards = [k for k in a if k.endswith(".safetensors")]
    assert len(shards) > 5
    for name in a:
        if name not in ("perta_config.json", "README.md"):
            assert a[name] == b[name], name
    ca, cb = json.loads(a["perta_config.json"]), json.loads(b["perta_config.json"])
    assert cb.pop("mode") == "stream" and "mode" not in ca
    for key in ("command", "hub", "run_id"):
        ca.pop(key), cb.pop(key)
    assert sorted(ca["files"]) == sorted(cb["files"]), (sorted(ca["files"]), sorted(cb["files"]))
    assert ca == cb  # the same record, files (sha256 of every shard) included
    # one data commit holding every file, then the record commit (as push does)
    repo = hub.repo("user/out-stream")
    head = repo.commits[repo.refs["main"]]
    data = repo.commits[head.parent]
    assert set(data.tree) == set(head.tree) and repo.commits[data.parent].title == "initial commit"
    # the staging inputs are gone, the local output holds no shard
    assert not list((tmp_path / "streamed").glob("*.safetensors"))
    assert not (tmp_path / ".streamed.perta-inputs").exists()


def test_mismatch_is_found_from_headers_alone(hub: HubServer, published: Published, make_model: Any,
                                              tmp_path: Path, monkeypatch: Any) -> None:
    from perta_hub.hub import remote_headers
    from perta_hub.hub.publish import push_folder

    monkeypatch.setattr(remote_headers, "FIRST_READ", 2048)  # these tiny shards are smaller than 100 kB

    other = make_model("other", dtype="bfloat16", max_shard_size="20KB", intermediate_size=96)
    push_folder(other, "user/other")
    served = hub.served
    result = run_cli("apply", "user/other", "--task-vector", published.task_vector, "--alpha", "1",
                     "-o", str(tmp_path / "out"), "--push", "user/x", "--stream")
    assert result.exit_code != 0
    line = error_line(result)
    assert "intermediate_size" in line or "shape" in line, line
    weights = weight_bytes(hub, "user/other") + weight_bytes(hub, "user/tv")
    assert hub.served - served < weights / 3  # headers and JSON only
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_without_writing_or_downloading(hub: HubServer, published: Published, tmp_path: Path,
                                                      monkeypatch: Any) -> None:
    from perta_hub.hub import remote_headers

    monkeypatch.setattr(remote_headers, "FIRST_READ", 2048)
    served = hub.served
    for extra in ((), ("--stream", "--push", "user/o")):
        result = run_cli(*apply_args(published, tmp_path / "out", "--dry-run", *extra))
        assert result.exit_code == 0, result.output
        text = result.output
        assert "output shards:" in text and "download:" in text and "peak local disk:" in text
        assert "peak RAM:" in text and "time:" in text
        assert ("mode: stream" in text) == bool(extra)
    inputs = sum(weight_bytes(hub, r) for r in ("user/target", "user/tv", "user/wm"))
    assert hub.served - served < inputs / 4
    assert not (tmp_path / "out").exists() and "user/o" not in {r for _, r in hub.repos}


def test_failed_upload_resumes_without_partial_commit(hub: HubServer, published: Published, tmp_path: Path) -> None:
    base = len(hub.uploaded)  # the inputs' uploads
    hub.fail("PUT", "^/lfs-upload/", 507, skip=3)  # a 5xx the client does not retry
    first = run_cli(*apply_args(published, tmp_path / "out", "--push", "user/out", "--stream"))
    assert first.exit_code != 0
    assert "Re-run the same command" in error_line(first)
    repo = hub.repo("user/out")
    assert [c.title for c in repo.commits.values()] == ["initial commit"]  # nothing committed
    sent_before = hub.uploaded[base:]
    assert len(sent_before) == 3
    second = run_cli(*apply_args(published, tmp_path / "out", "--push", "user/out", "--stream"))
    assert second.exit_code == 0, second.output
    assert not set(hub.uploaded[base + 3:]) & set(sent_before)  # confirmed shards are not uploaded again
    local = run_cli(*apply_args(published, tmp_path / "local", "--push", "user/ref"))
    assert local.exit_code == 0, local.output
    a, b = hub.files("user/ref"), hub.files("user/out")
    assert {k: v for k, v in a.items() if k.endswith(".safetensors")} == \
        {k: v for k, v in b.items() if k.endswith(".safetensors")}
    again = run_cli(*apply_args(published, tmp_path / "out", "--push", "user/out", "--stream"))
    assert again.exit_code == 0, again.output
    assert len(hub.repo("user/out").commits) == 3  # the re-run of a finished stream commits nothing


def test_broken_download_resumes(hub: HubServer, published: Published, tmp_path: Path) -> None:
    hub.cut(5000, times=1)  # the first weight download breaks halfway (headers are range reads, cut too)
    first = run_cli(*apply_args(published, tmp_path / "out", "--push", "user/out", "--stream"))
    if first.exit_code != 0:  # the client may retry on its own; if not, the re-run completes
        assert "Traceback" not in first.output
        second = run_cli(*apply_args(published, tmp_path / "out", "--push", "user/out", "--stream"))
        assert second.exit_code == 0, second.output
    assert any(k.endswith(".safetensors") for k in hub.files("user/out"))


@pytest.mark.slow
def test_stream_fits_a_disk_smaller_than_the_output(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    """The output folder (and the inputs staged beside it) on a tmpfs smaller than the output: the stream fits."""
    import subprocess

    import pytest

    from perta_hub.hub.publish import push_folder
    from perta_hub.hub.sink import HubSink
    from perta_hub.hub.source import HubSource
    from perta_hub.jobs.plan import plan_job
    from perta_hub.merge.apply import PerTAMergeJob
    from perta_hub.merge.spec import MergeSpec
    from perta_hub.merge.task_vector import task_vector

    shape = dict(dtype="bfloat16", max_shard_size="40KB", hidden_size=64, intermediate_size=128, num_hidden_layers=8)
    target, tuned = make_model("target", seed=0, **shape), make_model("tuned", seed=1, **shape)
    push_folder(target, "user/big")
    push_folder(task_vector(target, tuned, tmp_path / "tv", dtype="bfloat16", max_shard_size="40KB", progress=False),
                "user/big-tv")
    args = ["apply", "user/big", "--task-vector", "user/big-tv", "--alpha", "1", "--max-shard-size", "40KB"]
    spec = MergeSpec("user/big", "user/big-tv", alphas=("1",), device="cpu", max_shard_size="40KB")
    with HubSource(tmp_path / "headers") as source:  # the run's plan, from the headers
        job = PerTAMergeJob(spec, tmp_path / "x", source=source)
        sink = HubSink("user/small", private=None, revision=None, skip_card_check=False, state_dir=tmp_path)
        plan = plan_job(job, spec.max_shard_size, sink)
        bound, output = plan.needed_bytes, plan.output_bytes
        job.close()
    small = [v for r in ("user/big", "user/big-tv") for k, v in hub.files(r).items() if not k.endswith(".safetensors")]
    pages = sum(-(-len(v) // 4096) * 4096 for v in small) + 4096 * 16  # JSON and tokenizer files, folders
    quota = (bound * 5 // 4 + 2 * pages) // 4096 * 4096
    assert quota < output, (quota, bound, output)
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={quota}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs mount(8) with CAP_SYS_ADMIN (root outside a restricted container) for a small tmpfs; here: {mounted.stderr.strip()}")
    try:
        result = run_cli(*args, "-o", str(disk / "out"), "--push", "user/small", "--stream")
        assert result.exit_code == 0, result.output
        pushed = sum(len(v) for k, v in hub.files("user/small").items() if k.endswith(".safetensors"))
        assert pushed == output > quota
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_cut_download_resumes_with_range_requests(hub: HubServer, tmp_path: Path) -> None:
    """``fetch_into`` (our loop over ``get_session().stream``) picks a broken transfer up where it stopped."""
    import os
    import threading

    from huggingface_hub import HfApi

    from perta_hub.hub.remote_headers import resolve_repo
    from perta_hub.hub.stream_fetch import Arrivals, fetch_into

    data = os.urandom(3 << 20)
    HfApi().create_repo("user/cut")
    HfApi().upload_file(path_or_fileobj=data, path_in_repo="w.safetensors", repo_id="user/cut")
    repo, out = resolve_repo("user/cut"), tmp_path / "w.safetensors"
    hub.cut(1 << 20, times=2)  # two answers break after 1 MiB each
    served = hub.served
    fetch_into(repo, out, len(data), Arrivals(threading.Condition()), lambda: None)
    assert out.read_bytes() == data
    assert hub.served - served == (3 + 2 + 1) << 20  # the whole file, then from 1 MiB, then from 2 MiB


def test_hub_inputs_are_opened_and_checked_once(hub: HubServer, published: Published, tmp_path: Path,
                                                monkeypatch: Any) -> None:
    """``apply`` with Hub inputs (local mode) makes exactly the requests of opening them from their headers (those
    of ``--dry-run``: the repo listings with their sizes and hashes, the small files, a range read of each header),
    plus one download of each weight file: no input is listed, read or checked a second time."""
    from perta_hub.hub import remote_headers

    monkeypatch.setattr(remote_headers, "FIRST_READ", 2048)  # these tiny shards are smaller than 100 kB
    start = len(hub.log)
    assert run_cli(*apply_args(published, tmp_path / "dry", "--dry-run")).exit_code == 0
    middle = len(hub.log)
    result = run_cli(*apply_args(published, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    opening, run = hub.log[start:middle], hub.log[middle:]
    downloads = [path for method, path, status in run if status == 200 and path.endswith(".safetensors")]
    assert sorted(r for r in run if r[2] != 200 or not r[1].endswith(".safetensors")) == sorted(opening)
    weights = [f"/{repo}/resolve/{hub.repo(repo).refs['main']}/{name}" for repo in ("user/target", "user/tv", "user/wm")
               for name in hub.files(repo) if name.endswith(".safetensors")]
    assert sorted(downloads) == sorted(weights)  # each weight file downloaded once
    assert not staging_left(tmp_path / "out")


def staging_left(out: Path) -> bool:
    return (out.parent / f".{out.name}.perta-inputs").exists()
