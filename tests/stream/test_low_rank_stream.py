"""``apply --stream`` from a Hub low-rank (LoRA factors) task vector: the bytes of a local apply of the dense form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from perta_hub.cli import main
from tests.hub.conftest import hub  # noqa: F401 - the fixture, shared
from tests.hub_server import HubServer
from tests.merge.test_low_rank import make_adapter


def test_stream_forms_the_factors(hub: HubServer, make_model: Any, tmp_path: Path) -> None:  # noqa: F811
    from perta_hub.hub.publish import push_folder
    from perta_hub.merge.lora_delta import lora_task_vector
    from tests.helpers import make_weight_map

    base = make_model("base", seed=0, dtype="bfloat16", max_shard_size="20KB")
    adapter = make_adapter(base, tmp_path / "adapter")
    dense = lora_task_vector(base, adapter, tmp_path / "dense", low_rank=False, max_shard_size="30KB",
                             progress=False)
    low = lora_task_vector(base, adapter, tmp_path / "low", max_shard_size="30KB", progress=False)
    wm = make_weight_map(tmp_path / "wm", base)
    for folder, repo in ((base, "user/base"), (low, "user/low"), (wm, "user/wm")):
        push_folder(folder, repo)
    assert {k for k in hub.files("user/low") if k.endswith(".safetensors")} == \
        {p.name for p in low.glob("*.safetensors")}  # the factors are pushed
    common = ["--alpha", "0.7", "--max-shard-size", "12KB"]
    runner = CliRunner()
    local = runner.invoke(main, ["apply", str(base), "--task-vector", str(dense), "--weights", str(wm), *common,
                                 "-o", str(tmp_path / "local")], catch_exceptions=False)
    assert local.exit_code == 0, local.output
    streamed = runner.invoke(main, ["apply", "user/base", "--task-vector", "user/low", "--weights", "user/wm",
                                    *common, "-o", str(tmp_path / "streamed"), "--push", "user/out", "--stream"],
                             catch_exceptions=False)
    assert streamed.exit_code == 0, streamed.output
    pushed = {k: v for k, v in hub.files("user/out").items() if k.endswith(".safetensors")}
    expected = {p.name: p.read_bytes() for p in (tmp_path / "local").glob("*.safetensors")}
    assert len(expected) > 3 and pushed == expected
