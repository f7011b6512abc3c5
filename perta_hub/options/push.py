"""Options of ``perta-hub push``, the ``--push`` options of the commands that write a folder, and the
defaults of :func:`perta_hub.hub.publish.publish`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perta_hub.errors import InputError
from perta_hub.options.base import Options, option

_REVISION_HELP = "Branch to commit to (created from main if missing) [default: main]."


def _include() -> Any:
    return option("--include", metavar="PATTERN", multiple=True, default=(),
                  help="Also upload the folder's files matching this glob pattern (relative to the folder; "
                       "repeatable). Only the artifact's own files are uploaded otherwise [default: none].")


def _skip_card_check() -> Any:
    return option("--skip-card-check", is_flag=True, default=False,
                  help="Push a forget-derived artifact whose recorded forget data can no longer be read (its "
                       "card cannot be checked for forget-set examples) [default: refuse].")


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
    include: tuple[str, ...] = option(
        "--include", metavar="PATTERN", multiple=True, default=(),
        help="Also upload the files matching this glob pattern (relative to DIR; repeatable). Without it only "
             "the artifact's own files are uploaded; push names the files it left out.")
    skip_card_check: bool = option(
        "--skip-card-check", is_flag=True, default=False,
        help="Push a forget-derived artifact even when its recorded forget data can no longer be read, so its "
             "card cannot be checked for forget-set examples [default: refuse].")


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
    include: tuple[str, ...] = _include()
    skip_card_check: bool = _skip_card_check()

    def __bool__(self) -> bool:
        return self.push is not None

    def check_outputs(self, n_outputs: int = 1) -> None:
        """Refuse option combinations that cannot work, before any work is done."""
        if self.push is None and (self.revision or self.create_pr or self.private is not None or self.include
                                  or self.skip_card_check):
            raise InputError("--revision, --create-pr, --public/--private, --include and --skip-card-check only "
                             "apply with --push REPO")
        if self.create_pr and self.revision not in (None, "main"):
            raise InputError("--create-pr opens a pull request against main; leave out --revision")
        if self.push is not None and n_outputs != 1:
            raise InputError(f"--push publishes one folder, but this run writes {n_outputs}; push each one with "
                             "`perta-hub push DIR REPO`")
