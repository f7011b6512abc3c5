"""The `perta-hub` command line: a thin click layer over the Python API."""

from perta_hub.cli.commands import main

__all__ = ["main"]
