from __future__ import annotations

import pytest

# Database fixtures (SQLite always, PostgreSQL with SPECKLAB_TEST_POSTGRES_URL) for every module.
from .db_fixtures import database_url, db, migrated_database_url, migrated_templates  # noqa: F401
from .lab_client import lab  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", help="run tests that need a real devkit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a real devkit: run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
