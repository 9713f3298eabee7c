"""Shared test set-up: integration tests are marked by their folder, and get a longer
per-test limit (pytest-timeout) than the unit tests' 60 s default of pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.properties  # noqa: F401  (loads the hypothesis profile: derandomized in CI)

INTEGRATION_TIMEOUT = 300.0  # s: a real switch, SIP phones, 95-s hold scenarios


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parts[-2] == "integration":
            item.add_marker(pytest.mark.integration)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT))
