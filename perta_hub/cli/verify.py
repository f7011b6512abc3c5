"""``perta-hub verify``: check an output's files, provenance and privacy against its record."""

from __future__ import annotations

import sys

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.errors import ExitCode
from perta_hub.options.verify import VerifyOptions


@command("verify")
@click.argument("model")
@bind(VerifyOptions, "options")
def verify_command(model: str, options: VerifyOptions, console: Console) -> None:
    """Verify MODEL (an output folder or a Hub id org/name[@revision]) against its perta_config.json.

    Prints one line per check (PASS, FAIL, NOT CHECKED with the reason, NOT VERIFIED when a requested check
    could not be made) and exits 0 only when every requested check ran and passed, 1 when one failed, 3 when none
    failed but one could not be made.
    """
    from perta_hub.verification import verify

    o = options
    result = verify(model, recompute=o.recompute, sample=o.sample, seed=o.seed, privacy_level=o.privacy,
                    device=o.device, report=o.report, search=o.search)
    for line in result.lines():
        console.result(line)
    if o.report:
        console.status(f"audit record written to {o.report}")
    if result.exit_code != ExitCode.OK:
        sys.exit(result.exit_code)
