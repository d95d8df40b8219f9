"""How autokd's RDB storages set up their database connections: :func:`tune_engine`.

PostgreSQL: check a pooled connection before use only when it may have gone stale.

SQLAlchemy's ``pool_pre_ping`` sends a ping on EVERY checkout: on PostgreSQL a network round trip, twelve per
trial of the demo study, while the connection was last used milliseconds before. A server drops a connection
that sat idle (a restart, ``idle_session_timeout``, a firewall's idle timer), not one in steady use, so
:func:`ping_when_idle` pings only a connection that has been back in the pool for more than ``idle_s``
seconds, and on failure raises ``DisconnectionError``, on which the pool discards it and connects afresh
(SQLAlchemy's "pessimistic disconnect handling" through a checkout event). A connection just opened is not
pinged, as with ``pool_pre_ping``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

__all__ = ["IDLE_PING_S", "ping_when_idle", "sqlite_write_ahead_log", "tune_engine"]

#: Seconds a pooled connection may sit unused and still be handed out without a ping.
IDLE_PING_S = 1.0
_RETURNED = "autokd_returned_at"


def ping_when_idle(engine: Any, idle_s: float = IDLE_PING_S) -> None:
    """Install the idle-only ping on ``engine``'s pool (create the engine with ``pool_pre_ping=False``)."""
    from sqlalchemy import event, exc

    dialect = engine.dialect

    def returned(_dbapi_connection, record) -> None:
        record.info[_RETURNED] = time.monotonic()

    def opened(_dbapi_connection, record) -> None:
        record.info.pop(_RETURNED, None)

    def checkout(dbapi_connection, record, _proxy) -> None:
        at = record.info.pop(_RETURNED, None)
        if at is None or time.monotonic() - at <= idle_s:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as e:  # noqa: BLE001 -- any failure: reconnect (the connect itself reports a dead server)
            raise exc.DisconnectionError(f"stale connection: {e}") from e
        if not alive:
            raise exc.DisconnectionError("stale connection")

    event.listen(engine, "checkin", returned)
    event.listen(engine, "connect", opened)
    event.listen(engine, "checkout", checkout)


def sqlite_write_ahead_log(engine: Any) -> None:
    """SQLite in write-ahead-log mode with ``synchronous=NORMAL``: a commit appends to the log without an
    fsync (with the default rollback journal each small transaction costs ~2 fsyncs). Readers and the one
    writer no longer block each other. A killed process loses nothing committed; a power cut may lose the
    last commits, never the database. Connections opened from now on get it (the pool's open ones are
    closed); the mode itself is stored in the file."""
    import sqlite3

    from sqlalchemy import event

    def on_connect(dbapi_connection, _record) -> None:
        # a damaged file: the next query reports it (see storage.readable)
        with contextlib.suppress(sqlite3.DatabaseError):
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(engine, "connect", on_connect)
    engine.dispose()


def tune_engine(engine: Any) -> None:
    """What an autokd storage's engine gets, at creation and again where a pickled storage rebuilds it (Ray):
    SQLite's write-ahead log; PostgreSQL's idle-only ping. Other databases are left as they are."""
    if engine.name == "sqlite":
        sqlite_write_ahead_log(engine)
    elif engine.name == "postgresql":
        ping_when_idle(engine)

