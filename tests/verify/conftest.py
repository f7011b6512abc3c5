"""The local Hub fixture of the Hub tests, for the verify tests."""

from tests.hub.conftest import hub  # noqa: F401
