"""Choosing alpha (``perta-hub tune``): an in-memory search for the strongest forgetting within a utility budget.

Modules: ``search`` (the bracketing search, pure), ``signals`` (forget/retain NLL and probability, ROUGE),
``in_place`` (the target set in place to apply's result for one alpha), ``report`` (record, table, plot),
``command`` (:func:`~perta_hub.tuning.command.tune`, what the command runs and what ``perta_hub.tune(...)`` is).
"""
