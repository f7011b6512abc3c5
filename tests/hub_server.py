"""A small Hugging Face Hub-compatible HTTP server for the tests (standard library only).

The real ``huggingface_hub`` client is pointed at it (``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1``). It keeps
the repos' metadata in memory and the file contents on disk (``root/blobs/<sha256>``), and implements
what the client's upload, download and info calls need:

- ``POST /api/repos/create`` (records ``private``; an initial commit holds ``.gitattributes``)
- ``GET  /api/whoami-v2``
- ``POST /api/validate-yaml`` (structural checks of a card's YAML header, ``model-index`` included)
- ``GET  /api/{type}s/{repo}`` and ``/api/{type}s/{repo}/revision/{rev}`` (``sha``, ``private``, ``siblings``)
- ``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``), ``POST .../paths-info/{rev}``
- ``GET  /api/{type}s/{repo}/refs``, ``GET .../commits/{rev}``, ``POST .../branch/{name}``
- ``POST /api/{type}s/{repo}/preupload/{rev}`` (``lfs`` for weight-like or binary files, with the remote ``oid``)
- ``POST /{repo}.git/info/lfs/objects/batch`` (+ ``PUT`` upload URL and ``verify``); objects already stored
  get no upload action, which is what makes an interrupted push resumable
- ``GET  /api/{type}s/{repo}/lfs-files`` (``list_lfs_files``: every LFS object stored for the repo, committed or
  only uploaded; one page)
- ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON: header, ``file`` base64, ``lfsFile``, ``deletedFile``,
  ``deletedFolder``; ``create_pr=1`` makes ``refs/pr/N``)
- ``GET/HEAD /[datasets/]{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``Content-Length``
  and ``Range`` (``bytes=a-b`` and ``bytes=a-``: header-only reads) support

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Tokens
are ``Authorization: Bearer`` strings mapped to a user and a role; an unknown token is rejected with 401 and
``X-Error-Message: Invalid credentials in Authorization header`` (as the Hub does), writes need a ``write``
token of the repo's namespace (403 otherwise), private repos answer ``RepoNotFound`` to everyone but their
owner. ``HubServer.fail`` injects failures (an HTTP status for the n-th matching request) and
``HubServer.drop`` a lost connection (the socket closed, with no answer, after reading the n-th matching request);
``HubServer.slow`` throttles downloads and LFS uploads, ``HubServer.cut`` breaks download answers mid-stream.
``HubServer.lie`` makes the resolve endpoint lie about a file while the API (``repo_info``, ``paths-info``)
keeps listing the truth, as a broken server or a tampering proxy would: other bytes of the same size, a ``200``
to a range request, short content, an index naming files the repo does not hold.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import io
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_PATTERNS = [
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.npy", "*.npz",
    "*.pkl", "*.pickle", "*.parquet", "*.arrow", "*.gguf", "*.model", "*.zip", "*.gz", "*.tar", "*.zst",
]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # bytes: larger files go to LFS whatever their name
CHUNK = 1 << 20  # bytes per write of a download answer
VALID_RELATIONS = {"adapter", "merge", "quantized", "finetune"}
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    """The git object id (sha1) of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree: its content (by sha256), git id, size and whether it is an LFS file."""

    sha256: str
    git_oid: str
    size: int
    lfs: bool


@dataclass
class Commit:
    oid: str
    parent: str | None
    tree: dict[str, Entry]
    title: str
    message: str
    number: int


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main" / "refs/pr/1" / "v1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)  # sha256 of the LFS objects stored for this repo
    num_prs: int = 0

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


@dataclass
class Lie:
    """How the resolve endpoint lies about the files whose path matches ``pattern`` (see :meth:`HubServer.lie`)."""

    mode: str
    pattern: str
    times: int | None  # GET answers left to lie in (None: every one)
    requests: str = "all"  # "all", "range" (answers to a Range request) or "full" (the others)
    at: int = -1
    swap: tuple[bytes, bytes] | None = None
    keep: int | None = None
    whole: bool = True

    def applies(self, path: str, ranged: bool) -> bool:
        return (self.times is None or self.times > 0) and re.search(self.pattern, path) is not None and (
            self.requests == "all" or (self.requests == "range") == ranged)

    def content(self, data: bytes) -> bytes:
        """The bytes served in place of ``data`` (modes that change the file's content)."""
        if self.mode == "other-bytes":
            if self.swap is not None:
                a, b = self.swap
                assert len(a) == len(b) and a in data and b in data, "swap two same-length strings of the file"
                return re.sub(re.escape(a) + b"|" + re.escape(b), lambda m: b if m.group() == a else a, data)
            out = bytearray(data)
            out[self.at] ^= 0xFF
            return bytes(out)
        if self.mode == "short":
            return data[: len(data) // 2 if self.keep is None else self.keep]
        if self.mode == "index-missing":
            index = json.loads(data)
            index["weight_map"]["lm_head.missing"] = "model-missing.safetensors"
            return json.dumps(index, indent=2).encode()
        return data


@dataclass
class Failure:
    method: str
    pattern: str
    status: int
    skip: int
    times: int


class _Dropped(Exception):
    """Close the connection without an answer (a lost connection, as a network failure shows it)."""


class HubError(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` and message."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubServer:
    """The server's state and lifecycle; ``url`` is its endpoint once started."""

    def __init__(self, root: Path, tokens: dict[str, tuple[str, str]]) -> None:
        """``tokens``: token -> (user name, role ``"write"`` or ``"read"``)."""
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.uploaded: list[str] = []  # sha256 of every LFS object received by PUT, in order
        self.failures: list[Failure] = []
        self.tickets: dict[str, tuple[Repo, str, int]] = {}
        self.rate: float | None = None  # bytes/s of downloads and LFS uploads (None: as fast as it goes)
        self.cuts: list[int] = []  # the next download answers break after this many body bytes (see ``cut``)
        self.served = 0  # body bytes sent by resolve answers
        self.lies: list[Lie] = []
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- test helpers ----------------------------------------------------------------------------------
    def fail(self, method: str, pattern: str, status: int = 500, *, skip: int = 0, times: int = 1) -> None:
        """Answer ``status`` to matching requests ``skip+1`` .. ``skip+times`` (``pattern``: regex on the path)."""
        with self.lock:
            self.failures.append(Failure(method.upper(), pattern, status, skip, times))

    def drop(self, method: str, pattern: str, *, skip: int = 0, times: int = 1) -> None:
        """Close the connection of matching requests ``skip+1`` .. ``skip+times`` after reading them, unanswered
        (logged with status 0)."""
        self.fail(method, pattern, status=0, skip=skip, times=times)

    def slow(self, bytes_per_s: float | None) -> None:
        """Throttle downloads (resolve answers) and LFS uploads to ``bytes_per_s`` (None: full speed)."""
        self.rate = bytes_per_s

    def cut(self, after_bytes: int, *, times: int = 1) -> None:
        """Break the next ``times`` download answers mid-stream: the connection closes after ``after_bytes``
        body bytes (a download interrupted halfway)."""
        with self.lock:
            self.cuts += [after_bytes] * times

    def lie(self, mode: str, pattern: str = "", *, times: int | None = None, requests: str = "all", at: int = -1,
            swap: tuple[bytes, bytes] | None = None, keep: int | None = None, whole: bool = True) -> Lie:
        """Make the resolve endpoint lie about the files whose path in the repo matches ``pattern`` (regex), in its
        next ``times`` GET answers (None: all; ``HEAD`` answers lie along, unconsumed), while the API keeps listing
        their true size, sha256 and git blob id. ``mode``:

        - ``"other-bytes"``: other bytes of the same size, the headers (``ETag``, sizes) unchanged: byte ``at``
          inverted, or the two same-length byte strings of ``swap`` exchanged (e.g. two tensor names in a header);
          ``requests="range"`` lies only in answers to range requests (header reads), ``"full"`` only in the others;
        - ``"range-200"``: a range request answered ``200``, with the whole file (``whole``: a server that ignores
          ``Range``) or with only the bytes asked for (a ``200`` that claims they are the whole file);
        - ``"short"``: the file cut to ``keep`` bytes (half by default) in every answer, its ``Content-Length``,
          ``X-Linked-Size`` and ``Content-Range`` those of the cut file;
        - ``"index-missing"``: a safetensors index served naming a shard the repo does not hold.
        """
        assert mode in ("other-bytes", "range-200", "short", "index-missing"), mode
        rule = Lie(mode, pattern, times, "range" if mode == "range-200" else requests, at, swap, keep, whole)
        with self.lock:
            self.lies.append(rule)
        return rule

    def lie_for(self, path: str, method: str, ranged: bool) -> Lie | None:
        """The lie told in this answer (a GET uses one of its ``times``), or None."""
        with self.lock:
            for rule in self.lies:
                if rule.applies(path, ranged):
                    if method == "GET" and rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def take_cut(self) -> int | None:
        with self.lock:
            return self.cuts.pop(0) if self.cuts else None

    def throttle(self, nbytes: int) -> None:
        rate = self.rate
        if rate:
            time.sleep(nbytes / rate)

    def requests(self, method: str, pattern: str = "") -> list[tuple[str, str, int]]:
        """The logged requests of this method whose path matches ``pattern`` (regex)."""
        with self.lock:
            return [r for r in self.log if r[0] == method.upper() and re.search(pattern, r[1])]

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of every file of a revision."""
        repo = self.repo(repo_id, repo_type)
        tree = repo.commits[self.resolve(repo, revision)].tree
        return {path: self.blob(entry.sha256) for path, entry in tree.items()}

    # -- storage ---------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def resolve(self, repo: Repo, revision: str) -> str:
        """A branch, tag, ``refs/pr/N`` or full commit sha -> commit oid (``RevisionNotFound`` otherwise)."""
        name = revision.removeprefix("refs/heads/")
        if name in repo.refs:
            return repo.refs[name]
        if revision in repo.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def new_commit(self, repo: Repo, parent: str | None, tree: dict[str, Entry], title: str, message: str) -> str:
        self._counter += 1
        payload = json.dumps({"parent": parent, "tree": sorted((p, e.git_oid) for p, e in tree.items()),
                              "title": title, "message": message, "n": self._counter})
        oid = hashlib.sha1(payload.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, dict(tree), title, message, self._counter)
        return oid


def _is_lfs(path: str, size: int, sample: bytes) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or size > LFS_SIZE_THRESHOLD or b"\0" in sample


def _tree_entries(tree: dict[str, Entry], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """Tree listing items (files and folders) under ``prefix`` in the Hub's JSON format."""
    base = prefix.strip("/")
    if base and base in tree:
        raise HubError(400, f"{base} is a file, not a folder")
    start = f"{base}/" if base else ""
    files = {p: e for p, e in tree.items() if p.startswith(start)}
    if base and not files:
        raise HubError(404, f"{base} does not exist", "EntryNotFound")
    out: dict[str, dict[str, Any]] = {}
    for path, entry in sorted(files.items()):
        rest = path[len(start):].split("/")
        depth = len(rest) if recursive else 1
        for i in range(1, min(depth, len(rest) - 1) + 1):  # folders on the way
            folder = start + "/".join(rest[:i])
            out.setdefault(folder, {"type": "directory", "path": folder,
                                    "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0})
        if recursive or len(rest) == 1:
            out[path] = _file_item(path, entry)
    return list(out.values())


def _file_item(path: str, entry: Entry) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "path": path, "oid": entry.git_oid, "size": entry.size}
    if entry.lfs:
        item["lfs"] = {"oid": entry.sha256, "size": entry.size,
                       "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
    return item


def _validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML header, checked the way the Hub documents its card metadata."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if not match:
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the card header: {err}"], []
    if meta is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["The card header must be a YAML mapping"], []
    errors: list[str] = []
    for key in ("license", "library_name", "pipeline_tag", "base_model_relation"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "language"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            errors.append(f'"{key}" must be a string or a list of strings')
    base = meta.get("base_model")
    bases = [base] if isinstance(base, str) else base
    if base is not None and not (isinstance(bases, list) and all(
            isinstance(b, str) and re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", b) for b in bases)):
        errors.append('"base_model" must be a repo id or a list of repo ids')
    relation = meta.get("base_model_relation")
    if relation is not None:
        if relation not in VALID_RELATIONS:
            errors.append(f'"base_model_relation" must be one of {sorted(VALID_RELATIONS)}')
        if base is None:
            errors.append('"base_model_relation" needs "base_model"')
    if "model-index" in meta:
        errors += _validate_model_index(meta["model-index"])
    return errors, []


def _validate_model_index(index: Any) -> list[str]:
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    errors = []
    for model in index:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append('each "model-index" item needs a "name"')
            continue
        results = model.get("results")
        if not isinstance(results, list) or not results:
            errors.append(f'"model-index" item {model["name"]!r} needs a non-empty "results" list')
            continue
        for result in results:
            task, dataset = result.get("task"), result.get("dataset")
            metrics = result.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append('each result needs "task.type"')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                errors.append('each result needs "dataset.type" and "dataset.name"')
            if not isinstance(metrics, list) or not metrics or not all(
                    isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in metrics):
                errors.append('each result needs "metrics" with "type" and "value"')
    return errors


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes; with Nagle's algorithm the body waits for the client's delayed
    # ACK of the headers (~40 ms a response on Linux): a push of a tiny model took ~0.6 s instead of ~0.1 s
    disable_nagle_algorithm = True
    _request: tuple[str, str] | None = None  # (method, path) of the request being answered
    _entry: int | None = None  # its index in hub.log, once logged

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # a client that hung up: not an error
            super().handle()

    # -- plumbing --------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return b""
        if self.hub.rate is None or length < CHUNK:
            return self.rfile.read(length)
        parts, left = [], length
        while left:
            part = self.rfile.read(min(CHUNK, left))
            if not part:
                break
            parts.append(part)
            left -= len(part)
            self.hub.throttle(len(part))
        return b"".join(parts)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.raw_segments = [s for s in split.path.split("/") if s]
        self._request, self._entry = (method, split.path), None
        body = self._body() if method in ("POST", "PUT") else b""
        status = 500
        try:
            self._maybe_fail(method, split.path)
            status = self._route(method, split.path, body)
        except _Dropped:
            status = 0
            self.close_connection = True
            self._logged(status)  # logged before the client can see the drop (and a test can look at the log)
            self._request = None
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except HubError as err:
            status = err.status
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (it refused the answer)
            status = 499
            self.close_connection = True
        except Exception as err:  # a bug in the fixture: answer 500 with the reason
            self._send_error(HubError(500, f"{type(err).__name__}: {err}"))
        self._logged(status)
        self._request = None

    def _logged(self, status: int) -> None:
        """Log this request with ``status``: appended the first time (when its answer starts, see
        :meth:`send_response`), its status updated after (a client that stopped reading: 499)."""
        with self.hub.lock:
            if self._entry is None:
                self._entry = len(self.hub.log)
                self.hub.log.append((*self._request, status))
            else:
                self.hub.log[self._entry] = (*self._request, status)

    def send_response(self, code: int, message: str | None = None) -> None:
        # logged before the first byte of the answer: a client that has read the answer (and the test that made it)
        # finds the request in the log; logged after it, the client could be faster than the log
        if self._request is not None:  # not http.server's own answer to a request line it could not parse
            self._logged(code)
        super().send_response(code, message)

    def _maybe_fail(self, method: str, path: str) -> None:
        with self.hub.lock:
            for rule in self.hub.failures:
                if rule.method == method and rule.times > 0 and re.search(rule.pattern, path):
                    if rule.skip > 0:
                        rule.skip -= 1
                        return
                    rule.times -= 1
                    if rule.status == 0:
                        raise _Dropped()
                    raise HubError(rule.status, "injected failure")

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _json(self, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> int:
        return self._send(status, json.dumps(value).encode(), headers)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message}, err.status, headers)

    # -- auth --------------------------------------------------------------------------------------------
    def _user(self) -> tuple[str, str] | None:
        """(user, role) of the request's token; None without a token; 401 for an unknown token."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user()
        repo = self.hub.repos.get((repo_type, repo_id))
        visible = repo is not None and (not repo.private or (user is not None and user[0] == repo.namespace))
        if not visible:
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            self._check_write(user, repo_id.split("/")[0])
        assert repo is not None
        return repo

    @staticmethod
    def _check_write(user: tuple[str, str] | None, namespace: str) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if user[1] != "write" or user[0] != namespace:
            raise HubError(403, f"You don't have the rights to write to the namespace {namespace}")

    # -- routing -----------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes) -> int:
        seg = self.raw_segments
        if seg[:1] == ["api"]:
            return self._route_api(method, seg[1:], body)
        if seg[:1] == ["lfs-upload"] and method == "PUT" and len(seg) == 2:
            return self._lfs_put(seg[1], body)
        prefix = 1 if seg[:1] in (["datasets"], ["spaces"]) else 0
        repo_type = REPO_TYPES[seg[0]] if prefix else "model"
        rest = seg[prefix:]
        if len(rest) >= 2 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1])[:-4]}"
            if method == "POST" and rest[5:] == ["batch"]:
                return self._lfs_batch(repo_type, repo_id, json.loads(body))
            if method == "POST" and rest[5:] == ["verify"]:
                return self._lfs_verify(repo_type, repo_id, json.loads(body))
        if method in ("GET", "HEAD") and len(rest) >= 5 and rest[2] == "resolve":
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1])}"
            return self._resolve(repo_type, repo_id, unquote(rest[3]), unquote("/".join(rest[4:])))
        raise HubError(404, f"no route for {method} {path}")

    def _route_api(self, method: str, seg: list[str], body: bytes) -> int:
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body))
        if seg == ["whoami-v2"] and method == "GET":
            user = self._user()
            if user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": user[0],
                               "auth": {"type": "access_token", "accessToken": {"role": user[1]}}})
        if seg == ["validate-yaml"] and method == "POST":
            errors, warnings = _validate_card_metadata(json.loads(body).get("content", ""))
            return self._json({"errors": [{"message": e} for e in errors],
                               "warnings": [{"message": w} for w in warnings]}, 400 if errors else 200)
        if len(seg) < 3 or seg[0] not in REPO_TYPES:
            raise HubError(404, f"no route for {method} /api/{'/'.join(seg)}")
        repo_type, repo_id = REPO_TYPES[seg[0]], f"{unquote(seg[1])}/{unquote(seg[2])}"
        action, args = (seg[3] if len(seg) > 3 else ""), [unquote(s) for s in seg[4:]]
        if method == "GET" and action == "":
            return self._info(repo_type, repo_id, "main")
        if method == "GET" and action == "revision" and len(args) == 1:
            return self._info(repo_type, repo_id, args[0])
        if method == "GET" and action == "tree" and args:
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]))
        if method == "POST" and action == "paths-info" and len(args) == 1:
            return self._paths_info(repo_type, repo_id, args[0], body)
        if method == "GET" and action == "refs":
            return self._refs(repo_type, repo_id)
        if method == "GET" and action == "commits" and len(args) == 1:
            return self._commits(repo_type, repo_id, args[0])
        if method == "POST" and action == "branch" and args:
            return self._create_branch(repo_type, repo_id, "/".join(args), json.loads(body or b"{}"))
        if method == "GET" and action == "lfs-files" and not args:
            return self._lfs_files(repo_type, repo_id)
        if method == "POST" and action == "preupload" and len(args) == 1:
            return self._preupload(repo_type, repo_id, args[0], json.loads(body))
        if method == "POST" and action == "commit" and len(args) == 1:
            return self._commit(repo_type, repo_id, args[0], body)
        raise HubError(404, f"no route for {method} /api/{'/'.join(seg)}")

    # -- repos, refs, info ---------------------------------------------------------------------------------
    def _create_repo(self, payload: dict[str, Any]) -> int:
        user = self._user()
        namespace = payload.get("organization") or (user[0] if user else None)
        if namespace is None:
            raise HubError(401, "You must be authenticated to create a repo")
        self._check_write(user, namespace)
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        url_prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{url_prefix}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                return self._json({"error": "You already created this repo", "url": url}, 409)
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_type, repo_id, private)
            sha = self.hub.store(GITATTRIBUTES)
            tree = {".gitattributes": Entry(sha, git_blob_oid(GITATTRIBUTES), len(GITATTRIBUTES), False)}
            repo.refs["main"] = self.hub.new_commit(repo, None, tree, "initial commit", "")
            self.hub.repos[(repo_type, repo_id)] = repo
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _info(self, repo_type: str, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_type, repo_id)
        with self.hub.lock:
            commit = repo.commits[self.hub.resolve(repo, revision)]
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                item = _file_item(path, entry)
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if "lfs" in item:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                      "pointerSize": item["lfs"]["pointerSize"]}
            siblings.append(sibling)
        return self._json({
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo.namespace, "sha": commit.oid, "private": repo.private, "disabled": False,
            "gated": False, "tags": [], "siblings": siblings, "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
        })

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> int:
        repo = self._repo(repo_type, repo_id)
        with self.hub.lock:
            commit = repo.commits[self.hub.resolve(repo, revision)]
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        return self._json(_tree_entries(commit.tree, path, recursive))

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> int:
        repo = self._repo(repo_type, repo_id)
        with self.hub.lock:
            tree = repo.commits[self.hub.resolve(repo, revision)].tree
        try:
            paths = json.loads(body).get("paths", [])
        except json.JSONDecodeError:
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for path in [p.strip("/") for p in paths]:
            if path in tree:
                out.append(_file_item(path, tree[path]))
            elif any(p.startswith(path + "/") for p in tree):
                out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        return self._json(out)

    def _refs(self, repo_type: str, repo_id: str) -> int:
        repo = self._repo(repo_type, repo_id)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
                    for n, o in repo.refs.items() if not n.startswith("refs/")]
        prs = [{"name": n, "ref": n, "targetCommit": o} for n, o in repo.refs.items() if n.startswith("refs/pr/")]
        out: dict[str, Any] = {"branches": branches, "tags": [], "converts": []}
        if self.query.get("include_prs"):
            out["pullRequests"] = prs
        return self._json(out)

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_type, repo_id)
        with self.hub.lock:
            oid: str | None = self.hub.resolve(repo, revision)
            out = []
            while oid is not None:
                commit = repo.commits[oid]
                out.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                            "authors": [{"user": repo.namespace}], "date": "2025-01-01T00:00:00.000Z"})
                oid = commit.parent
        return self._json(out)

    def _create_branch(self, repo_type: str, repo_id: str, branch: str, payload: dict[str, Any]) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        with self.hub.lock:
            if branch in repo.refs:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.refs[branch] = self.hub.resolve(repo, payload.get("startingPoint") or "main")
        return self._json({})

    # -- uploads -------------------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict[str, Any]) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        with self.hub.lock:
            tree = repo.commits[self.hub.resolve(repo, revision)].tree
        files = []
        for item in payload.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            lfs = _is_lfs(item["path"], int(item["size"]), sample)
            remote = tree.get(item["path"])
            oid = None if remote is None else (remote.sha256 if remote.lfs else remote.git_oid)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        return self._json({"files": files})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict[str, Any]) -> int:
        repo = self._repo(repo_type, repo_id, write=payload.get("operation") == "upload")
        objects = []
        url_prefix = "" if repo_type == "model" else f"{repo_type}s/"
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            with self.hub.lock:
                stored = oid in repo.lfs_objects
                if not stored:
                    ticket = uuid.uuid4().hex
                    self.hub.tickets[ticket] = (repo, oid, size)
            if not stored:
                item["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{ticket}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/{url_prefix}{repo_id}.git/info/lfs/objects/verify",
                               "header": {}},
                }
            objects.append(item)
        return self._json({"transfer": "basic", "objects": objects}, headers={
            "Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_files(self, repo_type: str, repo_id: str) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        with self.hub.lock:
            named = {e.sha256: p for c in repo.commits.values() for p, e in c.tree.items() if e.lfs}
            oids = sorted(repo.lfs_objects)
        items = []
        for oid in oids:
            size = self.hub.blob_path(oid).stat().st_size
            items.append({"fileOid": oid, "oid": git_blob_oid(lfs_pointer(oid, size)), "size": size,
                          "filename": named.get(oid), "pushedAt": "2025-01-01T00:00:00.000Z", "ref": None})
        return self._json(items)

    def _lfs_put(self, ticket: str, body: bytes) -> int:
        with self.hub.lock:
            if ticket not in self.hub.tickets:
                raise HubError(403, "unknown or expired upload URL")
            repo, oid, size = self.hub.tickets[ticket]
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match oid {oid} and size {size}")
        self.hub.store(body)
        with self.hub.lock:
            repo.lfs_objects.add(oid)
            self.hub.uploaded.append(oid)
            self.hub.tickets.pop(ticket, None)
        return self._send(200)

    def _lfs_verify(self, repo_type: str, repo_id: str, payload: dict[str, Any]) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        oid = payload.get("oid")
        if oid not in repo.lfs_objects or self.hub.blob_path(oid).stat().st_size != payload.get("size"):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        return self._json({})

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        create_pr = self.query.get("create_pr") in ("1", "true", "True")
        with self.hub.lock:
            head = self.hub.resolve(repo, revision)
            parent_commit = header.get("parentCommit")
            if parent_commit and parent_commit != head:
                raise HubError(412, f"parentCommit {parent_commit} is not the head of {revision}")
            tree = dict(repo.commits[head].tree)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"].strip("/")
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else \
                        value["content"].encode()
                    tree[path] = Entry(self.hub.store(data), git_blob_oid(data), len(data), False)
                elif key == "lfsFile":
                    oid = value["oid"]
                    if oid not in repo.lfs_objects:
                        raise HubError(400, f"LFS object {oid} for {path} was never uploaded")
                    size = self.hub.blob_path(oid).stat().st_size
                    tree[path] = Entry(oid, git_blob_oid(lfs_pointer(oid, size)), size, True)
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    doomed = [p for p in tree if p.startswith(path + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            oid = self.hub.new_commit(repo, head, tree, header.get("summary", ""), header.get("description", ""))
            url_prefix = "" if repo_type == "model" else f"{repo_type}s/"
            answer: dict[str, Any] = {"success": True, "commitOid": oid,
                                      "commitUrl": f"{self.hub.url}/{url_prefix}{repo_id}/commit/{oid}"}
            if create_pr:
                repo.num_prs += 1
                repo.refs[f"refs/pr/{repo.num_prs}"] = oid
                answer["pullRequestUrl"] = f"{self.hub.url}/{url_prefix}{repo_id}/discussions/{repo.num_prs}"
            else:
                repo.refs[revision.removeprefix("refs/heads/")] = oid
        return self._json(answer)

    # -- downloads -----------------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> int:
        repo = self._repo(repo_type, repo_id)
        with self.hub.lock:
            commit = repo.commits[self.hub.resolve(repo, revision)]
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        etag = entry.sha256 if entry.lfs else entry.git_oid
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        ranged = bool(match) and self.command == "GET"
        lie = self.hub.lie_for(path, self.command, ranged)
        data = None if lie is None or lie.mode == "range-200" else lie.content(self.hub.blob(entry.sha256))
        size = entry.size if data is None else len(data)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size, 200
        if ranged:
            assert match is not None
            start = min(int(match.group(1)), size)
            end = min(int(match.group(2)) + 1, size) if match.group(2) else size
            if end < start:
                raise HubError(416, f"range {self.headers['Range']} is not satisfiable for {size} bytes")
            if lie is not None and lie.mode == "range-200":  # no Content-Range: "this is the whole file"
                start, end = (0, size) if lie.whole else (start, end)
            else:
                status = 206
                headers["Content-Range"] = f"bytes {start}-{max(end - 1, start)}/{size}"
        headers["Content-Length"] = str(end - start)
        if self.command == "HEAD":
            return self._send(200, b"", headers, "application/octet-stream")
        with self.hub.lock:
            self.hub.served += end - start
        return self._send_file(status, data if data is not None else self.hub.blob_path(entry.sha256), start, end,
                               headers)

    def _send_file(self, status: int, source: Path | bytes, start: int, end: int, headers: dict[str, str]) -> int:
        """Send bytes ``[start, end)`` of a blob (or of the bytes a lie serves) in chunks, at ``hub.rate`` bytes/s
        if set; ``hub.cut_after`` closes the connection once that many body bytes of one answer are sent (a
        transfer broken mid-stream)."""
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        cut = self.hub.take_cut()
        sent = 0
        with (io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")) as fh:
            fh.seek(start)
            while sent < end - start:
                n = min(CHUNK, end - start - sent)
                if cut is not None and sent + n > cut:
                    self.wfile.write(fh.read(cut - sent))
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return 0
                self.wfile.write(fh.read(n))
                sent += n
                self.hub.throttle(n)
        return status


def point_client_at(monkeypatch: Any, url: str, home: Path, token: str | None = None) -> None:
    """Point ``huggingface_hub`` (and transformers, which reads its constants) at ``url`` for one test.

    Sets the environment and patches the constants ``huggingface_hub`` computed at import time
    (endpoint, offline mode, Xet, cache and token locations). A fresh ``home`` means no cached files
    and no stored login; ``token`` becomes ``HF_TOKEN`` (None: no token at all).
    """
    from huggingface_hub import constants

    cache = home / "hub"
    env = {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
           "HF_HUB_CACHE": str(cache)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    patched = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    for key, value in patched.items():
        if hasattr(constants, key):
            monkeypatch.setattr(constants, key, value)
