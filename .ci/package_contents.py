"""Check that a built wheel and sdist hold every module and resource file of the source package.

Usage: python .ci/package_contents.py REPO WHEEL SDIST
Exit 1 naming the first missing files (the wheel of issue 20 lacked ``perta_hub/options/``).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def source_files(repo: Path) -> set[str]:
    """Files of ``perta_hub/`` that git tracks (what a release must ship), as repo-relative POSIX paths."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "perta_hub"], check=True, capture_output=True,
                            text=True).stdout.split()
    return {p for p in listed if (repo / p).is_file()}


def missing(expected: set[str], shipped: set[str], what: str) -> list[str]:
    gone = sorted(expected - shipped)
    if gone:
        print(f"{what} lacks {len(gone)} file(s) of the source package: {', '.join(gone[:5])}")
    return gone


def main(repo: str, wheel: str, sdist: str) -> int:
    expected = source_files(Path(repo))
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    with tarfile.open(sdist) as tf:
        in_sdist = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    bad = missing(expected, in_wheel, wheel) + missing(expected, in_sdist, sdist)
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in in_wheel):
        print(f"{wheel} has no LICENSE file")
        bad.append("LICENSE")
    if not bad:
        print(f"wheel and sdist hold all {len(expected)} files of perta_hub/")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
