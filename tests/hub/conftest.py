"""The local Hub fixture shared by the Hub tests: a fresh server per test, the real client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub_server import HubServer, point_client_at

TOKEN = "hf_user_write_token"
READ_TOKEN = "hf_user_read_token"
OTHER_TOKEN = "hf_other_write_token"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A fresh Hub on 127.0.0.1 with users ``user`` and ``other``; the client uses ``user``'s write token."""
    server = HubServer(tmp_path / "hub-server", {
        TOKEN: ("user", "write"), READ_TOKEN: ("user", "read"), OTHER_TOKEN: ("other", "write"),
    }).start()
    point_client_at(monkeypatch, server.url, tmp_path / "hf-home", token=TOKEN)
    yield server
    server.stop()
