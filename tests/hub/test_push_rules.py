"""Issue 22, push: ``--include`` glob semantics on every Python, symlinks judged by where they resolve, hard
links, and the one forget-data rule push and verify share (every forget-derived kind, every text file,
normalised text, partial quotes)."""

from __future__ import annotations

from typing import Any

import pytest

from perta_hub.hub.allowlist import glob_match
from tests.hub.test_hub import run_cli
from tests.hub.test_push_allowlist import listed, remote_files
from tests.hub_server import HubServer

# -- --include -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("logs/**", "logs/train.log", True), ("logs/**", "logs/run/1/events.txt", True), ("logs/**", "logs2/x", False),
    ("logs/**", "a/logs/x", False), ("**/*.txt", "notes.txt", True), ("**/*.txt", "logs/run/events.txt", True),
    ("**/*.txt", "notes.txt.bak", False), ("a/*/b", "a/x/b", True), ("a/*/b", "a/b", False),
    ("a/*/b", "a/x/y/b", False), ("*.log", "logs/train.log", False), ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True), ("[!n]*.txt", "notes.txt", False), ("[n]?tes.txt", "notes.txt", True),
])
def test_glob_match(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) is matches


INCLUDED = {"logs/**": {"logs/train.log", "logs/run/events.txt"},
            "**/*.txt": {"notes.txt", "logs/run/events.txt", "a/x/b/c.txt", "a/x/y/b/d.txt"},
            "a/*/b/*": {"a/x/b/c.txt"}}


@pytest.mark.parametrize("via", ["cli", "api"])
@pytest.mark.parametrize("pattern", list(INCLUDED))
def test_include_follows_glob_semantics(pattern: str, via: str, hub: HubServer, make_model: Any) -> None:
    from perta_hub.hub.publish import publish

    model = make_model("model")
    expected = listed(model)
    for name in ("logs/train.log", "logs/run/events.txt", "notes.txt", "a/x/b/c.txt", "a/x/y/b/d.txt"):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text("x\n")
    if via == "cli":
        result = run_cli("push", str(model), "user/m", "--include", pattern)
        assert result.exit_code == 0, result.output
    else:
        publish(model, "user/m", include=[pattern])
    assert remote_files("user/m") == expected | INCLUDED[pattern]
