"""What an attacker does to an output folder before verify sees it: edit files, then rewrite the record's hashes
so that the files agree with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perta_hub.records import CONFIG_NAME


def record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / CONFIG_NAME).read_text())


def write_record(folder: Path, data: dict[str, Any]) -> None:
    (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")


def rewrite_hashes(folder: Path) -> None:
    """Record the sha256 of every file now in ``folder`` (as the writer would have), card and record excepted."""
    from perta_hub.io.output_folder import output_files

    data = record(folder)
    data["files"] = output_files(folder, {})
    write_record(folder, data)
