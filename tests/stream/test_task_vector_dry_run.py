"""``task-vector --base A --finetuned B --dry-run`` from Hub ids: checked from headers, planned, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from perta_hub.cli import main
from tests.hub.conftest import hub  # noqa: F401 - the fixture, shared
from tests.hub_server import HubServer


def weight_bytes(hub: HubServer, repo: str) -> int:  # noqa: F811
    return sum(len(v) for k, v in hub.files(repo).items() if k.endswith(".safetensors"))


def test_task_vector_dry_run_reads_headers_only(hub: HubServer, make_model: Any, tmp_path: Path,  # noqa: F811
                                                 monkeypatch: Any) -> None:
    from perta_hub.hub import remote_headers
    from perta_hub.hub.publish import push_folder

    monkeypatch.setattr(remote_headers, "FIRST_READ", 2048)  # these tiny shards are smaller than 100 kB
    shape = dict(dtype="bfloat16", hidden_size=64, num_hidden_layers=4)  # weights well above the JSON files
    push_folder(make_model("a", seed=0, max_shard_size="40KB", intermediate_size=128, **shape), "user/a")
    push_folder(make_model("b", seed=1, max_shard_size="60KB", intermediate_size=128, **shape), "user/b")
    push_folder(make_model("c", max_shard_size="40KB", intermediate_size=96, **shape), "user/c")
    inputs = weight_bytes(hub, "user/a") + weight_bytes(hub, "user/b")
    served = hub.served
    out = tmp_path / "tv"
    result = CliRunner().invoke(main, ["task-vector", "--base", "user/a", "--finetuned", "user/b", "-o", str(out),
                                       "--max-shard-size", "50KB", "--dry-run", "--push", "user/tv"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = result.output
    for key in ("mode: local (push to user/tv)", "output shards:", "download:", "upload:", "peak local disk:",
                "peak RAM:", "time:"):
        assert key in text, text
    assert hub.served - served < inputs / 4  # headers and JSON only
    assert not out.exists() and "user/tv" not in {r for _, r in hub.repos}
    served = hub.served
    bad = CliRunner().invoke(main, ["task-vector", "--base", "user/a", "--finetuned", "user/c", "-o", str(out),
                                    "--dry-run"], catch_exceptions=False)
    assert bad.exit_code != 0
    assert "intermediate_size" in bad.output or "shape" in bad.output, bad.output
    assert hub.served - served < inputs / 4 and not out.exists()
    refused = CliRunner().invoke(main, ["task-vector", "user/a", "--forget", "tofu:forget01", "-o", str(out),
                                        "--dry-run"], catch_exceptions=False)
    assert refused.exit_code != 0 and "--dry-run" in refused.output
