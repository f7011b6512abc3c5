"""The ``perta-hub`` command: a thin click layer over the Python API.

Each command parses options, calls one API function and prints its result. Errors of the
package's own types become one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from perta_hub import __version__
from perta_hub.errors import PertaError


class _Group(click.Group):
    """A click group that turns known failures into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PertaError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: re-run the same command to resume; complete shards are kept.", err=True)
            sys.exit(130)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                click.echo(
                    f"Error: no space left on the device ({err.filename or 'output'}); free space and re-run "
                    "the same command: complete shards are kept, partial ones are discarded.",
                    err=True,
                )
                sys.exit(1)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perta-hub")
def main() -> None:
    """Per-parameter task arithmetic (PerTA) unlearning for LLMs, integrated with the Hugging Face Hub."""
