"""Fixtures for studies shared by several worker processes, on SQLite, a journal file and a real PostgreSQL."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def postgres_url():
    """A fresh, empty database on the PostgreSQL server named by ``AUTOKD_TEST_POSTGRES`` (``.ci/run`` starts
    one with ``.ci/postgres start``); dropped afterwards. Skipped when no server is configured outside CI."""
    admin = os.environ.get("AUTOKD_TEST_POSTGRES")
    if not admin:
        if os.environ.get("CI"):
            pytest.fail("AUTOKD_TEST_POSTGRES is not set in CI: .ci/run must start PostgreSQL (.ci/postgres start)")
        pytest.skip("no PostgreSQL server: run `export AUTOKD_TEST_POSTGRES=$(.ci/postgres start)` (needs the "
                    "Debian postgresql package)")
    psycopg = pytest.importorskip("psycopg", reason="pip install 'autokd[postgres]'")
    name = f"autokd_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
