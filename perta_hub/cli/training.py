"""The fine-tuning options (:class:`perta_hub.options.training.TrainingOptions`) as click options."""

from __future__ import annotations

from perta_hub.cli.bind import bind
from perta_hub.options.training import TrainingOptions

#: add the fine-tuning options; the callback receives ``training: TrainingOptions`` and
#: ``training_given: list[str]`` (the flags set on the command line)
training_options = bind(TrainingOptions, "training", given="training_given")
