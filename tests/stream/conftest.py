"""The local Hub (tests/hub/conftest.py) and three published inputs: a target, its task vector and a weight map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hub.conftest import TOKEN, hub  # noqa: F401 - the fixture, shared
from tests.hub_server import HubServer


@dataclass
class Published:
    target: str
    task_vector: str
    weights: str
    local_target: Path
    local_tv: Path
    local_wm: Path


@pytest.fixture
def published(hub: HubServer, make_model: Any, tmp_path: Path) -> Published:  # noqa: F811
    """``user/target`` (bf16, many shards), ``user/tv`` and ``user/wm`` on the local Hub."""
    from perta_hub.hub.publish import push_folder
    from perta_hub.merge.task_vector import task_vector
    from tests.helpers import make_weight_map

    target = make_model("target", seed=0, dtype="bfloat16", max_shard_size="20KB")
    tuned = make_model("tuned", seed=1, dtype="bfloat16", max_shard_size="30KB")
    tv = task_vector(target, tuned, tmp_path / "tv", max_shard_size="50KB", progress=False)
    wm = make_weight_map(tmp_path / "wm", target)
    push_folder(target, "user/target")
    push_folder(tv, "user/tv")
    push_folder(wm, "user/wm")
    return Published("user/target", "user/tv", "user/wm", target, tv, wm)
