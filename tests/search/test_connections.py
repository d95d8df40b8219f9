"""A pooled connection is checked before use only after it sat idle, and a dead one is replaced without the
caller noticing (SQLite here for the pool's logic; a real PostgreSQL server for a connection it closed)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from autokd.search.backends import connections


def _engine(tmp_path, idle_s):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}", poolclass=sa.pool.QueuePool, pool_size=1)
    connections.ping_when_idle(engine, idle_s=idle_s)
    return engine


def test_only_an_idle_connection_is_pinged(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(connections.time, "monotonic", lambda: clock[0])
    engine = _engine(tmp_path, idle_s=1.0)
    pings = []
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: (pings.append(c), True)[1])
    for advance, pinged in [(0.0, 0), (0.5, 0), (1.0, 0), (1.01, 1), (0.2, 1), (30.0, 2)]:
        clock[0] += advance
        with engine.connect() as db:
            assert db.execute(sa.text("SELECT 1")).scalar_one() == 1
        assert len(pings) == pinged, advance  # a fresh connection is never pinged; idle > 1 s is


def test_a_connection_that_fails_its_ping_is_replaced(tmp_path, monkeypatch):
    engine = _engine(tmp_path, idle_s=0.0)
    with engine.connect() as db:
        first = db.connection.dbapi_connection
    calls = []

    def ping(conn):
        calls.append(conn)
        if len(calls) == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return True

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT 1")).scalar_one() == 1
        second = db.connection.dbapi_connection
    assert calls == [first] and second is not first  # the failed one was dropped, a new one opened (not pinged)


def test_a_connection_the_server_closed_is_replaced_on_postgresql(postgres_url):
    from autokd.search.backends.storage import make_storage

    storage = make_storage(postgres_url)
    engine = storage.engine
    with engine.connect() as db:
        pid = db.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    with sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")).connect() as admin:
        assert admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    time.sleep(connections.IDLE_PING_S + 0.2)  # past the idle limit: the next checkout pings, fails, reconnects
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_storages_keep_their_set_up_when_pickled(tmp_path):
    """A pickled storage (Ray ships it to its workers) rebuilds its engine with the same set-up."""
    import pickle

    from autokd.search.backends.storage import make_storage

    storage = pickle.loads(pickle.dumps(make_storage(f"sqlite:///{tmp_path / 'a.db'}")))
    with storage.engine.connect() as db:
        assert db.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert db.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
    with pytest.raises(AttributeError):
        storage._memo.trial  # noqa: B018 -- a fresh per-thread memo, empty
