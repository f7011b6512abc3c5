"""The ``perta-hub`` group: error handling, the recorded command line, ``-q``/``-v`` on every command.

Each command module registers itself with :func:`command`; its callback receives its options objects
(:mod:`perta_hub.options`) and a :class:`~perta_hub.cli.console.Console`.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from perta_hub._version import __version__
from perta_hub.cli.bind import option_kwargs
from perta_hub.cli.console import configured
from perta_hub.errors import ExitCode, PertaError
from perta_hub.options.common import OutputOptions
from perta_hub.runtime.invocation import invoked_as


class _Group(click.Group):
    """A click group that records its command line and turns known failures into one line and an exit status
    (:class:`perta_hub.errors.ExitCode`; click's own usage errors exit with ``ExitCode.USAGE``)."""

    def main(self, args: Sequence[str] | None = None, *pos: Any, **kwargs: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        with invoked_as(args):  # what perta_config.json records as "command"
            return super().main(args, *pos, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PertaError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: re-run the same command to resume; complete shards are kept.", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                click.echo(
                    f"Error: cannot write more ({err.strerror}: {err.filename or 'output'}); free space and re-run "
                    "the same command: complete shards are kept, partial ones are discarded.",
                    err=True,
                )
                sys.exit(ExitCode.ERROR)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perta-hub")
def main() -> None:
    """Per-parameter task arithmetic (PerTA) unlearning for LLMs, integrated with the Hugging Face Hub."""


def command(name: str) -> Callable[[Any], click.Command]:
    """Register a ``perta-hub NAME`` command with ``-q/--quiet`` and ``-v/--verbose`` (listed last).

    The callback gets ``console=Console`` and runs with the CLI's process settings applied
    (:func:`perta_hub.cli.console.configured`).
    """
    output_fields = OutputOptions.flags()

    def decorate(func: Any) -> click.Command:
        @functools.wraps(func)
        def callback(*args: Any, **kwargs: Any) -> Any:
            options = OutputOptions(**{f.name: kwargs.pop(f.name) for f, _ in output_fields})
            with configured(options) as console:
                return func(*args, console=console, **kwargs)

        cmd = main.command(name)(callback)
        cmd.params.extend(click.Option([*flag.decls, f.name], **option_kwargs(flag, f.default))
                          for f, flag in output_fields)
        return cmd

    return decorate
