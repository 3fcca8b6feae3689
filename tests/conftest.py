"""Fixtures: every database test runs on SQLite and on PostgreSQL, on a schema built by the
migrations (never by ``create_all``).

PostgreSQL: one database per test session (``gk_test_<pid>``), migrated once, emptied after
each test. SQLite: one migrated file per session, copied for each test. CI fails, never skips,
when PostgreSQL is not reachable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from gatekeeper.app import create_app
from gatekeeper.config import load_settings
from gatekeeper.migrate import upgrade
from gatekeeper.models import Base

# Fixtures shared by several test modules live in a helper module registered here, so test
# files use them as parameters without importing them.
pytest_plugins = ["test_retention_helpers"]

PG_ADMIN_URL = os.environ.get("GATEKEEPER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")
TEST_SECRET = "test-secret-key-0123456789"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"gk_test_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required for the tests and is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _empty_pg(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "gatekeeper.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("pg_url")
    yield url
    _empty_pg(url)


def make_settings(db_url: str, tmp_path: Path, **extra: Any) -> Any:
    overrides = {
        "env": "test",
        "database_url": db_url,
        "secret_key": TEST_SECRET,
        "archive_database_url": f"sqlite:///{tmp_path / 'archive.db'}",
        "spool_dir": str(tmp_path / "spool"),
        **extra,
    }
    return load_settings(environ={}, overrides=overrides)


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    application = create_app(make_settings(db_url, tmp_path))
    application.config["TESTING"] = True
    yield application
    application.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
    application.extensions["gatekeeper.db"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def drain(app: Flask) -> Callable[[], dict[str, int]]:
    """Apply what the app journaled (clicks, webhook events), as ``gatekeeper drain`` does."""
    from gatekeeper.spool import Handler, drain_all

    handlers: dict[str, Handler] = {}

    def run() -> dict[str, int]:
        settings = app.extensions["gatekeeper.settings"]
        return drain_all(settings, app.extensions["gatekeeper.db"], handlers)

    return run


@pytest.fixture
def api_key(app: Flask) -> str:
    from gatekeeper.api.auth import SCOPES, create_api_key

    database = app.extensions["gatekeeper.db"]
    with database.session_scope() as session:
        return create_api_key(session, app.extensions["gatekeeper.context"].hasher, "tests", SCOPES)


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}
