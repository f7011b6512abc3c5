"""``perta-hub push`` and the ``--push`` step of the commands that write a folder."""

from __future__ import annotations

from typing import Any

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.options.push import PublishOptions, PushOptions


def push_and_report(console: Console, folder: Any, repo: str, *, private: bool | None, revision: str | None = None,
                    create_pr: bool = False, commit_message: str | None = None, include: tuple[str, ...] = (),
                    skip_card_check: bool = False) -> Any:
    """Push a folder with :func:`perta_hub.hub.publish.publish` and print what happened (warning once if public)."""
    from perta_hub.hub.publish import public_artifact_warning, publish
    from perta_hub.io.hub_source import split_repo_id

    warning = public_artifact_warning(folder, split_repo_id(repo)[0], private)
    if warning:
        console.warning(warning)
    result = publish(folder, repo, private=private, revision=revision, create_pr=create_pr,
                     commit_message=commit_message, include=include, skip_card_check=skip_card_check)
    for note in result.notes:  # the files left out, a skipped card check
        console.warning(note)
    visibility = {True: "private", False: "public"}.get(result.private, "visibility: Hub default")
    if result.pr_url:
        console.result(f"Opened pull request {result.pr_url} on {result.repo_id} ({visibility}): commit "
                       f"{result.commit}")
    elif result.changed:
        console.result(f"Pushed {folder} to {result.repo_id}@{result.revision} ({visibility}): commit {result.commit}")
    else:
        console.result(f"{result.repo_id}@{result.revision} already holds {folder} ({visibility}): commit "
                       f"{result.commit}; nothing uploaded")
    return result


def push_after(console: Console, options: PushOptions, folder: Any) -> Any:
    """Publish ``folder`` if ``--push`` was given (prints the result); returns the PushResult or None."""
    if options.push is None:
        return None
    return push_and_report(console, folder, options.push, private=options.private, revision=options.revision,
                           create_pr=options.create_pr, include=options.include,
                           skip_card_check=options.skip_card_check)


#: the ``--push ...`` options of a command that writes a folder: the callback receives ``push_options``
push_options = bind(PushOptions, "push_options")


@command("push")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("repo", metavar="REPO")
@bind(PublishOptions, "options")
def push_command(folder: str, repo: str, options: PublishOptions, console: Console) -> None:
    """Publish an artifact or model folder DIR to the Hub repo REPO (org/name, created if missing).

    Stale weight shards of an earlier version are deleted, unchanged files are not uploaded again (re-run
    an interrupted push to complete it), and the commit sha is printed and recorded in perta_config.json
    and the card. The token comes from HF_TOKEN or `hf auth login`.
    """
    push_and_report(console, folder, repo, private=options.private, revision=options.revision,
                    create_pr=options.create_pr, commit_message=options.commit_message, include=options.include,
                    skip_card_check=options.skip_card_check)
