from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# Database fixtures (SQLite always, PostgreSQL with SPECKLAB_TEST_POSTGRES_URL) for every module.
from .db_fixtures import database_url, db, migrated_database_url, migrated_templates  # noqa: F401
from .lab_client import lab  # noqa: F401

# The property tests check values, never speed: on a loaded machine (CI shares its two cores) a
# slow example is no failure of the code under test.
settings.register_profile("specklab", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("specklab")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", help="run tests that need a real devkit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a real devkit: run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
