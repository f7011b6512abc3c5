"""What ``perta-hub verify`` found: one :class:`Check` per line, and the JSON audit record.

A check is ``pass`` (ran and passed), ``fail`` (ran and failed), ``skipped`` (not applicable to this output by
its kind's definition or its place, e.g. the privacy of a local folder: said why, never counted as a pass) or
``unverified`` (requested but could not run: a missing token, a revision that no longer exists, an input found
nowhere, a kind whose weights come from training under ``--recompute``). The outcome is ``pass`` only when no
check failed and none was left unverified (a requested level whose checks were all not applicable gets a NOT
VERIFIED line: :meth:`VerifyResult.cover_levels`); it decides the exit status (:attr:`VerifyResult.exit_code`: 0,
1 for a FAIL, 3 for NOT VERIFIED).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from perta_hub._version import __version__
from perta_hub.errors import ExitCode

Status = Literal["pass", "fail", "skipped", "unverified"]
LABELS = {"pass": "PASS", "fail": "FAIL", "skipped": "NOT CHECKED", "unverified": "NOT VERIFIED"}


@dataclass(frozen=True)
class Check:
    """One line of the summary: a level (integrity, provenance, privacy), what was checked and the outcome."""

    level: str
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        """``PASS  integrity  shard hashes: ...`` (one line, no newline)."""
        return f"{LABELS[self.status]:<12} {self.level:<10} {self.name}: {self.detail}"


@dataclass
class VerifyResult:
    """Every check made on one output, what was checked against, and when."""

    source: str
    kind: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    levels: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    #: the inputs the record names (role -> source, repo id, revision), as checked
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: sha256 of the output's files as found (name -> hex)
    files: dict[str, str] = field(default_factory=dict)
    #: what ``--sample`` chose: seed and tensor names (None: every tensor, or no recomputation)
    sample: dict[str, Any] | None = None
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    seconds: float = 0.0

    def add(self, level: str, name: str, status: Status, detail: str) -> Check:
        check = Check(level, name, status, detail)
        self.checks.append(check)
        return check

    @property
    def outcome(self) -> Literal["pass", "fail", "unverified"]:
        """``fail`` if any check failed, else ``unverified`` if any could not be done, else ``pass``."""
        statuses = {c.status for c in self.checks}
        if "fail" in statuses:
            return "fail"
        if "unverified" in statuses or not statuses & {"pass"}:
            return "unverified"
        return "pass"

    @property
    def ok(self) -> bool:
        return self.outcome == "pass"

    @property
    def exit_code(self) -> ExitCode:
        """``OK`` (every requested check passed), ``ERROR`` (a check failed) or ``NOT_VERIFIED``."""
        return {"pass": ExitCode.OK, "fail": ExitCode.ERROR, "unverified": ExitCode.NOT_VERIFIED}[self.outcome]

    def cover_levels(self) -> None:
        """A NOT VERIFIED line for each requested level that holds no check or only not-applicable ones: a level
        asked for is never passed unchecked."""
        for level in self.levels:
            if all(c.status == "skipped" for c in self.checks if c.level == level):
                self.add(level, level, "unverified", f"no {level} check could be made on this output (see the lines "
                         "above)")

    def lines(self) -> list[str]:
        """The summary: one line per check, then the outcome."""
        failed = [c for c in self.checks if c.status in ("fail", "unverified")]
        tail = {"pass": f"verified {self.source}: every requested check passed",
                "fail": f"verification of {self.source} FAILED ({len(failed)} check(s) failed or not verified)",
                "unverified": f"{self.source} could NOT be verified ({len(failed)} check(s) not verified)"}
        return [c.line() for c in self.checks] + [tail[self.outcome]]

    def to_report(self) -> dict[str, Any]:
        """The JSON audit record: what was checked, against which revisions and hashes, when, with which
        perta-hub version, and the outcome."""
        from perta_hub.runtime.invocation import current_command

        return {
            "perta_hub_version": __version__, "command": current_command(), "checked_at": self.started,
            "seconds": round(self.seconds, 3),
            "subject": {"source": self.source, "kind": self.kind, "repo_id": self.repo_id, "revision": self.revision},
            "levels": self.levels, "inputs": self.inputs, "files": self.files, "sample": self.sample,
            "checks": [asdict(c) for c in self.checks],
            "summary": {status: [f"{c.level} {c.name}" for c in self.checks if c.status == status]
                        for status in ("pass", "fail", "unverified", "skipped")},
            "outcome": self.outcome, "exit_code": int(self.exit_code),
        }

    def write_report(self, path: str | Path) -> Path:
        """Write :meth:`to_report` as JSON (atomically) and return the path."""
        from perta_hub.io.atomic import write_atomic

        path = Path(path).expanduser()
        write_atomic(path, json.dumps(self.to_report(), indent=2, default=str) + "\n")
        return path
