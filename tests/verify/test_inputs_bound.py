"""Inputs are bound by content: the record holds each local input's resolved absolute path beside its content
hash, so verify works from any directory, finds an input that moved among the output's siblings or under
``--search DIR`` by that hash, and still reads records written before paths were recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode
from tests.helpers import tree_digest
from tests.verify.attacks import record, write_record


@pytest.fixture
def work(tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``work/``: target, tuned, ``tv`` and ``model``, made from inside ``work`` with relative paths (as a user
    types them); the test then runs from ``tmp_path/elsewhere``."""
    from perta_hub.demo.tiny import build_tiny_llama
    from perta_hub.merge.apply import apply
    from perta_hub.merge.task_vector import task_vector

    work = tmp_path / "work"
    for name, seed in (("target", 0), ("tuned", 1)):
        build_tiny_llama(work / name, tokenizer, seed=seed, max_shard_size="40KB")
    monkeypatch.chdir(work)
    task_vector("target", "tuned", "tv", max_shard_size="40KB", progress=False)
    apply("target", "tv", alphas=[1.0], out_dir="model", device="cpu", max_shard_size="40KB", progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return work


def verify_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["verify", *args, "--recompute", "--no-privacy"], catch_exceptions=False)


def input_line(output: str, role: str) -> str:
    return next(line for line in output.splitlines() if f"provenance {role} input:" in line)


def test_record_holds_absolute_paths_and_verify_runs_from_anywhere(work: Path) -> None:
    data = record(work / "model")
    assert data["task_vector"]["source"] == "tv" and data["task_vector"]["path"] == str(work / "tv")
    assert data["target"]["source"] == "target" and data["target"]["path"] == str(work / "target")
    assert record(work / "tv")["base"]["path"] == str(work / "target")
    before = tree_digest(work)
    result = verify_cli(str(work / "model"))
    assert result.exit_code == ExitCode.OK, result.output
    assert input_line(result.output, "task_vector") == (
        f"PASS         provenance task_vector input: {work / 'tv'} is at the recorded revision "
        f"{data['task_vector']['revision']}")
    assert tree_digest(work) == before


def test_input_moved_beside_the_output_is_found_by_content_hash(work: Path) -> None:
    (work / "tv").rename(work / "tv-moved")
    result = verify_cli(str(work / "model"))
    assert result.exit_code == ExitCode.OK, result.output
    assert input_line(result.output, "task_vector") == (
        f"PASS         provenance task_vector input: {work / 'tv-moved'} holds the recorded content "
        f"{record(work / 'model')['task_vector']['revision']} (found by content hash; the record says {work / 'tv'})")


def test_input_moved_away_is_not_verified_until_searched(work: Path, tmp_path: Path) -> None:
    far = tmp_path / "archive" / "2024"
    far.mkdir(parents=True)
    (work / "tv").rename(far / "tv")
    revision = record(work / "model")["task_vector"]["revision"]
    result = verify_cli(str(work / "model"))
    assert result.exit_code == ExitCode.NOT_VERIFIED, result.output
    assert input_line(result.output, "task_vector") == (
        f"NOT VERIFIED provenance task_vector input: cannot find {work / 'tv'}: it is not there, and no folder "
        f"searched by content hash holds its content {revision} (searched: {work}); pass --search DIR where it now "
        "is")
    result = verify_cli(str(work / "model"), "--search", str(far))
    assert result.exit_code == ExitCode.OK, result.output
    assert input_line(result.output, "task_vector").startswith(
        f"PASS         provenance task_vector input: {far / 'tv'} holds the recorded content")


def test_input_changed_in_place_fails(work: Path) -> None:
    from tests.helpers import rewrite_tensors

    rewrite_tensors(work / "tv", "task_vector", lambda state: {k: v * 2 for k, v in state.items()})
    result = verify_cli(str(work / "model"))
    assert result.exit_code == ExitCode.ERROR, result.output
    assert input_line(result.output, "task_vector").startswith(
        f"FAIL         provenance task_vector input: {work / 'tv'}: its files' content hash is sha256:")


@pytest.mark.parametrize("cwd", ["work", "elsewhere"])
def test_a_record_without_paths_is_still_read(cwd: str, work: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Records written before ``path``: the relative source from the directory it was made in, or from any other
    directory relative to a folder above the output."""
    data = record(work / "model")
    for role in ("target", "task_vector"):
        del data[role]["path"]
    write_record(work / "model", data)
    monkeypatch.chdir(tmp_path / cwd)
    result = verify_cli(str(work / "model"))
    assert result.exit_code == ExitCode.OK, result.output
    found = work / "tv" if cwd == "elsewhere" else Path("tv")
    assert input_line(result.output, "task_vector") == (
        f"PASS         provenance task_vector input: {found} is at the recorded revision "
        f"{data['task_vector']['revision']}")
