"""``apply --stream`` from the local Hub gives, bit for bit, the merge kernel's own result (the reference is
:func:`perta_hub.merge.kernel.merge_tensor` called on the inputs, see tests/merge/test_kernel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import assert_is_kernel, kernel_outputs, weight_map
from tests.hub_server import HubServer
from tests.stream.conftest import Published


@pytest.mark.parametrize("kind", ["all", "w=0"])
def test_apply_stream_gives_the_kernels_bytes(hub: HubServer, published: Published, tmp_path: Path, kind: str) -> None:
    from click.testing import CliRunner
    from safetensors.torch import load

    from perta_hub.cli import main
    from perta_hub.hub.publish import push_folder

    wm_repo, wm = published.weights, published.local_wm
    if kind == "w=0":
        wm = weight_map(kind, tmp_path, published.local_target)
        wm_repo = "user/wm-restricted"
        push_folder(wm, wm_repo)
    result = CliRunner().invoke(main, ["apply", published.target, "--task-vector", published.task_vector, "--weights",
                                       wm_repo, "--alpha", "0.7", "--max-shard-size", "12KB", "-o",
                                       str(tmp_path / "streamed"), "--push", "user/out", "--stream"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    streamed: dict[str, torch.Tensor] = {}
    for path, data in hub.files("user/out").items():
        if path.endswith(".safetensors"):
            streamed.update(load(data))
    assert len([p for p in hub.files("user/out") if p.endswith(".safetensors")]) > 5
    expected = kernel_outputs(published.local_target, published.local_tv, wm, [0.7])[0.7]
    assert_is_kernel(streamed, expected, "apply --stream")
