"""``apply --stream`` with ``--step`` and with weight maps whose weights are zero, against the local Hub: the step
norm recorded in the streamed output, ``--step`` from local artifacts, one line (nothing written or published)
where it cannot run or the map does nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner

from perta_hub.cli import main
from tests.helpers import load_state, make_weight_map, rewrite_tensors
from tests.hub_server import HubServer
from tests.stream.conftest import Published


def run_cli(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(result: Any) -> list[str]:
    """The ``Error:`` lines (the Hub client's download bars may precede one on the same line)."""
    return ["Error:" + line.split("Error:", 1)[1] for line in result.output.splitlines() if "Error:" in line]


def test_stream_records_the_step_and_takes_step_from_local_artifacts(hub: HubServer, published: Published,
                                                                     tmp_path: Path) -> None:
    p = published
    result = run_cli("apply", p.target, "--task-vector", p.local_tv, "--weights", p.local_wm, "--step", "0.5",
                     "--max-shard-size", "12KB", "-o", tmp_path / "out", "--push", "user/out", "--stream")
    assert result.exit_code == 0, result.output
    files = hub.files("user/out")
    config = json.loads(files["perta_config.json"])
    assert config["mode"] == "stream" and config["step"] == 0.5 and config["step_norm"] == 0.5
    assert result.stdout.splitlines()[-1].endswith(
        f"; alpha {config['alpha']:g}, step norm ||alpha w*tau|| / ||tau|| = 0.5 (--step 0.5)"), result.stdout
    local = run_cli("apply", p.local_target, "--task-vector", p.local_tv, "--weights", p.local_wm, "--alpha",
                    repr(config["alpha"]), "--max-shard-size", "12KB", "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    streamed = {k: v for k, v in files.items() if k.endswith(".safetensors")}
    assert streamed and streamed == {p.name: p.read_bytes() for p in (tmp_path / "local").glob("*.safetensors")}
    assert json.loads((tmp_path / "local" / "perta_config.json").read_text())["step_norm"] == 0.5


def test_step_with_hub_artifacts_is_one_line_and_dry_run_says_when_alpha_is_set(hub: HubServer, published: Published,
                                                                                 tmp_path: Path) -> None:
    p = published
    result = run_cli("apply", p.target, "--task-vector", p.task_vector, "--weights", p.weights, "--step", "0.5",
                     "-o", tmp_path / "out", "--push", "user/out", "--stream")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error_lines(result) == [
        "Error: --step with --stream needs the task vector and the weight map on local disk (alpha is set from one "
        "pass over them before the merge): download them first, or give --alpha"]
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.perta-inputs").exists()
    assert "user/out" not in {r for _, r in hub.repos}
    dry = run_cli("apply", p.target, "--task-vector", p.task_vector, "--step", "0.5", "--step", "1", "-o",
                  tmp_path / "out", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines()[0] == ("--step: alpha is set when the run starts, from one pass over the task "
                                          "vector and the weight map")
    assert not (tmp_path / "out").exists()


def test_zero_weight_maps_in_stream_mode(hub: HubServer, published: Published, tmp_path: Path) -> None:
    """A local map is refused before anything is written; a Hub map (read only while merging) by the merge's step
    norm, before the commit: nothing is published."""
    from perta_hub.hub.publish import push_folder

    p = published
    zero = make_weight_map(tmp_path / "wm-zero", p.local_target)
    rewrite_tensors(zero, "importance_forget", lambda s: {k: torch.zeros_like(v) for k, v in s.items()})
    count = sum(t.numel() for t in load_state(zero, "importance_forget").values())
    result = run_cli("apply", p.target, "--task-vector", p.task_vector, "--weights", zero, "--alpha", "1", "-o",
                     tmp_path / "out", "--push", "user/out", "--stream")
    assert result.exit_code == 1 and error_lines(result) == [
        f"Error: the weight map {zero} gives w < 1e-06 on all {count:,} parameters it covers (100% zero weights at "
        "p=1, lam=1, eps=1e-12): the merge would write the target back unchanged; re-create the weight map or pass "
        "other --p/--lam/--eps"], result.output
    assert not (tmp_path / "out").exists() and "user/out" not in {r for _, r in hub.repos}

    push_folder(zero, "user/wm-zero")
    result = run_cli("apply", p.target, "--task-vector", p.task_vector, "--weights", "user/wm-zero", "--alpha", "1",
                     "-o", tmp_path / "out2", "--push", "user/out2", "--stream")
    assert result.exit_code == 1 and error_lines(result) == [
        "Error: the weight map user/wm-zero moves the model by ||w*tau|| / ||tau|| = 0 (its weights are below 1e-06): "
        "the merge would write the target back unchanged; nothing is committed"], result.output
    repo = hub.repo("user/out2")
    assert [c.title for c in repo.commits.values()] == ["initial commit"]


def test_step_with_hub_artifacts_in_local_mode_fetches_them_whole_once(hub: HubServer, published: Published,
                                                                      tmp_path: Path) -> None:
    """``apply`` (not ``--stream``) with Hub ids for the task vector and the map and ``--step``: they are downloaded
    whole for the step's pass (each weight file once; the merge then reads them from disk), the target is fetched
    as it is read; the output is the local apply's at the alpha the step gave, and nothing is left staged."""
    p = published
    start = len(hub.log)
    result = run_cli("apply", p.target, "--task-vector", p.task_vector, "--weights", p.weights, "--step", "0.5",
                     "--max-shard-size", "12KB", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "perta_config.json").read_text())
    assert config["step"] == 0.5 and config["step_norm"] == 0.5
    downloads = [path for _, path, status in hub.log[start:] if status == 200 and path.endswith(".safetensors")]
    assert len(downloads) == len(set(downloads))  # every weight file downloaded once
    local = run_cli("apply", p.local_target, "--task-vector", p.local_tv, "--weights", p.local_wm, "--alpha",
                    repr(config["alpha"]), "--max-shard-size", "12KB", "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    assert {f.name: f.read_bytes() for f in (tmp_path / "out").glob("*.safetensors")} == \
        {f.name: f.read_bytes() for f in (tmp_path / "local").glob("*.safetensors")}
    assert not (tmp_path / ".out.perta-inputs").exists()
