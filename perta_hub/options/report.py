"""Options of the recipe step ``report`` (no command of its own): an experiment's report (``results.json``,
``results.md``, ``results.png``, ``report.html``) from its evaluations (:mod:`perta_hub.recipes.report`)."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, option


@dataclass(frozen=True)
class ReportOptions(Options):
    """Which evaluations the report gathers, how it names them, its title and notes."""

    command = "report"

    evaluations: tuple[str, ...] = option(
        "--evaluations", multiple=True, required=True, default=(),
        help="Outputs of evaluate steps (${step}); each evaluated model is a row, named by the label of the step "
             "that made it (an unlearn model: its method), the retain model of --retain-model included.")
    methods: tuple[str, ...] = option(
        "--methods", multiple=True, default=(),
        help="Methods whose best settings are reported, in this order [default: every label but target and "
             "retain, in the order of the rows].")
    title: str | None = option("--title", help="Title of the report [default: the TOFU split and the recipe].")
    plot_title: str | None = option("--plot-title", help="Title of the plot [default: the TOFU split].")
    note: str | None = option(
        "--note", help="Why the run is useful even if no method forgets (a smoke test); the report says it only "
                       "then.")


REPORT = ReportOptions()
