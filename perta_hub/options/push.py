"""Options of ``perta-hub push``, the ``--push`` options of the commands that write a folder, and the
defaults of :func:`perta_hub.hub.publish.publish`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.errors import InputError
from perta_hub.options.base import Options, option

_REVISION_HELP = "Branch to commit to (created from main if missing) [default: main]."


@dataclass(frozen=True)
class PublishOptions(Options):
    """``perta-hub push DIR REPO``: visibility, branch or pull request, commit title."""

    command = "push"

    private: bool | None = option(
        "--private/--public",
        help="Visibility of a new repo. Task vectors, weight maps and fine-tuned models (kind in "
             "perta_config.json) are private unless --public; other folders are public unless --private.")
    revision: str | None = option("--revision", help=_REVISION_HELP)
    create_pr: bool = option("--create-pr", is_flag=True, default=False,
                             help="Open a pull request against main instead of committing.")
    commit_message: str | None = option(
        "--commit-message",
        help="Commit title [default: 'perta-hub: ' + the command recorded in perta_config.json].")


PUBLISH = PublishOptions()


@dataclass(frozen=True)
class PushOptions(Options):
    """``--push REPO --revision --create-pr --public/--private`` of a command that writes a folder."""

    push: str | None = option("--push", metavar="REPO",
                              help="After writing, publish the output folder to this Hub repo (org/name; created "
                                   "if missing).")
    revision: str | None = option(
        "--revision", help="Branch of the --push repo to commit to (created from main if missing) [default: main].")
    create_pr: bool = option("--create-pr", is_flag=True, default=False,
                             help="Open a pull request on the --push repo instead of committing to main.")
    private: bool | None = option(
        "--private/--public",
        help="Visibility of a new --push repo. Task vectors, weight maps and models fine-tuned on the forget "
             "data are private unless --public; unlearned models are public unless --private.")

    def __bool__(self) -> bool:
        return self.push is not None

    def check_outputs(self, n_outputs: int = 1) -> None:
        """Refuse option combinations that cannot work, before any work is done."""
        if self.push is None and (self.revision or self.create_pr or self.private is not None):
            raise InputError("--revision, --create-pr and --public/--private only apply with --push REPO")
        if self.create_pr and self.revision not in (None, "main"):
            raise InputError("--create-pr opens a pull request against main; leave out --revision")
        if self.push is not None and n_outputs != 1:
            raise InputError(f"--push publishes one folder, but this run writes {n_outputs}; push each one with "
                             "`perta-hub push DIR REPO`")
