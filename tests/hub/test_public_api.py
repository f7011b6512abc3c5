"""perta_hub uses only the public API of ``huggingface_hub`` (docs/hub.md, "Supported versions").

Public: the names in ``huggingface_hub.__all__``, the ``huggingface_hub.errors`` classes and the
``huggingface_hub.utils`` helpers of the reference docs (:data:`UTILS_PUBLIC`). The scan (AST, no import of
perta_hub) fails on an import from any other module of huggingface_hub (``lfs``, ``file_download``,
``repocard``, ``constants``, ``utils._headers`` ...), a name outside those, and a ``._name`` attribute that is
private to huggingface_hub: any ``._name`` read on a huggingface_hub name or on a variable assigned from one, and
anywhere else (``self``/``cls`` aside) a ``._name`` that huggingface_hub's own source defines (``op._upload_mode``,
``api._build_hf_headers()``). The last tests guard the one thing the public API lacks (docs/hub.md).
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.hub_server import HubServer

PACKAGE = Path(__file__).resolve().parents[2] / "perta_hub"
PUBLIC_MODULES = {"huggingface_hub", "huggingface_hub.errors", "huggingface_hub.utils"}
UTILS_PUBLIC = {  # huggingface_hub.utils names of the reference docs ("Utilities"), build_hf_headers included
    "are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars", "build_hf_headers",
    "hf_raise_for_status", "get_session", "get_token", "tqdm", "send_telemetry", "validate_hf_hub_args",
    "HFValidationError", "validate_repo_id",
}


@functools.cache
def hub_private_names() -> frozenset[str]:
    """Every ``_name`` (not dunder) huggingface_hub's source defines: functions, classes, attributes it sets."""
    import huggingface_hub

    names = set()
    for path in Path(huggingface_hub.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return frozenset(n for n in names if n.startswith("_") and not n.endswith("__"))


def _allowed(module: str, name: str) -> bool:
    import huggingface_hub

    if name.startswith("_"):
        return False
    if module == "huggingface_hub":
        return name in huggingface_hub.__all__ or f"{module}.{name}" in PUBLIC_MODULES
    if module == "huggingface_hub.utils":
        return name in UTILS_PUBLIC
    return module == "huggingface_hub.errors"


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Uses of huggingface_hub outside its public API in ``source`` (``file:line: what``)."""
    tree = ast.parse(source, filename)
    modules: dict[str, str] = {}  # local name -> huggingface_hub module it is bound to
    hub_names: set[str] = set()  # local names of huggingface_hub objects, and variables assigned from them
    found = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    def rooted_in_hub(node: ast.AST) -> bool:
        while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return isinstance(node, ast.Name) and (node.id in hub_names or node.id in modules)

    for node in ast.walk(tree):  # bindings first (imports sit in function bodies)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "huggingface_hub":
                    continue
                if alias.name not in PUBLIC_MODULES:
                    bad(node, f"import of {alias.name}")
                modules[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "huggingface_hub"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "huggingface_hub":
            if node.module not in PUBLIC_MODULES:
                bad(node, f"import from {node.module}")
                continue
            for alias in node.names:
                if not _allowed(node.module, alias.name):
                    bad(node, f"{node.module}.{alias.name} is not public")
                if f"{node.module}.{alias.name}" in PUBLIC_MODULES:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                else:
                    hub_names.add(alias.asname or alias.name)
    for _ in range(2):  # variables assigned from huggingface_hub objects (twice: chains of assignments)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None \
                    and rooted_in_hub(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                hub_names.update(t.id for t in targets if isinstance(t, ast.Name))
    private = hub_private_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in modules:
                module = modules[node.value.id]
                if f"{module}.{node.attr}" in PUBLIC_MODULES:
                    continue
                if not _allowed(module, node.attr):
                    bad(node, f"{module}.{node.attr} is not public")
            elif node.attr.startswith("_") and not node.attr.endswith("__"):
                receiver = node.value.id if isinstance(node.value, ast.Name) else None
                if rooted_in_hub(node.value) or (receiver not in ("self", "cls") and node.attr in private):
                    bad(node, f"private attribute .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "getattr", "setattr", "hasattr") and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in private:
            bad(node, f"private attribute {node.args[1].value!r} through {node.func.id}")
    return found


def test_perta_hub_uses_only_the_public_api() -> None:
    found = [v for path in sorted(PACKAGE.rglob("*.py"))
             for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert found == []


PLANTED = '''
import huggingface_hub
import huggingface_hub.lfs
import huggingface_hub.utils as hub_utils
from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.file_download import http_get
from huggingface_hub.repocard import metadata_load
from huggingface_hub.utils import _headers, get_fixed_hook
from huggingface_hub.utils import build_hf_headers


def push(api, path):
    op = CommitOperationAdd(path_in_repo="a", path_or_fileobj=path)
    op._upload_mode, op._is_uploaded = "lfs", True
    api._build_hf_headers()
    client = HfApi()
    same = client
    same._thread_pool_like_name = 1
    getattr(api, "_build_hf_headers")
    huggingface_hub.file_download.http_get
    hub_utils._http
    return build_hf_headers(), huggingface_hub.HfApi(), self_like(op)
'''


def test_the_scan_finds_planted_private_uses(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED)
    found = violations(planted.read_text(), planted.name)
    expected = [
        (3, "import of huggingface_hub.lfs"),
        (5, "huggingface_hub.constants is not public"),
        (6, "import from huggingface_hub.file_download"),
        (7, "import from huggingface_hub.repocard"),
        (8, "huggingface_hub.utils._headers is not public"),
        (8, "huggingface_hub.utils.get_fixed_hook is not public"),
        (14, "private attribute ._upload_mode"),
        (14, "private attribute ._is_uploaded"),
        (15, "private attribute ._build_hf_headers"),
        (18, "private attribute ._thread_pool_like_name"),
        (19, "private attribute '_build_hf_headers' through getattr"),
        (20, "huggingface_hub.file_download is not public"),
        (21, "huggingface_hub.utils._http is not public"),
    ]
    assert sorted(found) == sorted(f"planted.py:{line}: {what}" for line, what in expected)
    clean = "\n".join(line for i, line in enumerate(PLANTED.splitlines(), 1) if i in (2, 4, 9, 10, 11, 12, 13, 22))
    assert violations(clean) == []


# -- the gap: committing a shard an earlier run uploaded (its file deleted since), by sha256 and size -------------


def _preuploaded(hub: HubServer, repo_id: str, data: bytes) -> dict[str, Any]:
    """Upload ``data`` as an LFS object of ``repo_id`` (no commit), as a streaming run that then stopped does."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.preupload_lfs_files(repo_id, [CommitOperationAdd(path_in_repo="w.safetensors", path_or_fileobj=data)])
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "sample": base64.b64encode(data[:512]).decode()}


@pytest.mark.parametrize("xet", [False, True])
def test_an_uploaded_shard_commits_by_sha256(hub: HubServer, monkeypatch: Any, xet: bool) -> None:
    """A new process commits an LFS object it no longer has the bytes of: ``uploaded_op`` (public names only)
    must still make a commit of exactly that object, sending no bytes, also where the client would upload with
    Xet (a stand-in file object goes through the LFS batch, which answers "already stored")."""
    from huggingface_hub import HfApi, constants

    from perta_hub.hub.sink import _confirmed, uploaded_op

    data = b"\x08\0\0\0\0\0\0\0{}      " + bytes(range(256)) * 64
    info = _preuploaded(hub, "user/gap", data)
    uploads = len(hub.uploaded)
    api = HfApi()
    assert _confirmed(api, "user/gap", {"w.safetensors": info, "x.safetensors": {**info, "size": 1}}) == \
        {"w.safetensors"}
    if xet:
        if importlib.util.find_spec("hf_xet") is None:
            pytest.skip("hf_xet is not installed (an optional huggingface_hub dependency): the Xet variant of the "
                        "commit-by-sha256 path cannot run; the plain-LFS case (xet=False) still runs")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)  # as a user with hf_xet installed
    api.create_commit("user/gap", [uploaded_op("w.safetensors", info)], commit_message="shards")
    assert hub.files("user/gap")["w.safetensors"] == data
    assert len(hub.uploaded) == uploads


def test_a_shard_the_hub_lost_is_never_committed_with_other_bytes(hub: HubServer) -> None:
    from huggingface_hub import HfApi

    from perta_hub.errors import HubError
    from perta_hub.hub.sink import uploaded_op
    from perta_hub.io.hub_source import _hub_errors

    info = _preuploaded(hub, "user/gap", b"\x08" + bytes(range(256)) * 64)
    lost = {**info, "sha256": hashlib.sha256(b"other").hexdigest()}
    gone = "^w.safetensors, uploaded by an interrupted run, is no longer on the Hub"
    with pytest.raises(HubError, match=gone), _hub_errors("user/gap", None, "pushing to"):  # as hub/sink.py calls it
        HfApi().create_commit("user/gap", [uploaded_op("w.safetensors", lost)], commit_message="shards")
    assert [c.title for c in hub.repo("user/gap").commits.values()] == ["initial commit"]
