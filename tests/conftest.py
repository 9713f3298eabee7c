"""Shared test set-up: integration tests are marked by their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.properties  # noqa: F401  (loads the hypothesis profile: derandomized in CI)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parts[-2] == "integration":
            item.add_marker(pytest.mark.integration)
