"""The study's storage — the single source of truth shared by every worker — and the lock that makes a
study's one-time steps (creating its tables, enqueueing its baselines) happen exactly once.

URLs (``search.storage``; default ``sqlite:///<study_dir>/study.db``):

- ``sqlite:///path.db`` — one machine, several processes (heartbeats on).
- ``postgresql://user@host/db`` or ``postgresql+psycopg://...`` — many machines (``pip install
  'autokd[postgres]'`` installs psycopg 3, which SQLAlchemy 2 uses for both spellings); heartbeats on.
- ``journal:///path.log`` — Optuna's ``JournalFileBackend``: several workers on one machine without a
  database server. Limits: no heartbeat (a crashed worker's trial is failed by the next run on the same
  machine, which knows the process is dead, not by other workers), one machine (a shared file system's
  locking is not trusted).
- ``memory`` — in-process, nothing stored (tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ...locks import file_lock
from .connections import ping_when_idle

if TYPE_CHECKING:
    from ...config import StudyConfig

__all__ = ["make_storage", "open_study", "load_study", "study_lock", "check_storage_url", "storage_kind",
           "readable"]

_KINDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgresql+psycopg": "postgresql",
          "postgresql+psycopg2": "postgresql", "mysql": "mysql", "mysql+pymysql": "mysql", "journal": "journal"}


def storage_kind(url: str) -> str:
    """``sqlite`` | ``postgresql`` | ``mysql`` | ``journal`` | ``memory``; a one-line ConfigError otherwise."""
    if url == "memory":
        return "memory"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _KINDS:
        raise ConfigError(f"search.storage: unsupported URL {url!r}; use sqlite:///path.db, "
                          "postgresql://user@host/db, journal:///path.log or memory")
    return _KINDS[scheme]


def _journal_path(url: str) -> Path:
    path = url.split("://", 1)[1]
    if not path.startswith("/"):
        raise ConfigError(f"search.storage: {url!r}: a journal URL needs an absolute path (journal:///abs/path.log)")
    return Path(path)


def check_storage_url(url: str) -> None:
    """Validate the URL and that its driver is installed (before anything trains)."""
    kind = storage_kind(url)
    if kind == "postgresql":
        scheme = url.split("://", 1)[0]
        module = "psycopg2" if scheme.endswith("psycopg2") else "psycopg"
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"search.storage: {scheme}:// needs the {module} driver; "
                              "pip install 'autokd[postgres]'") from None
    elif kind == "mysql":
        try:
            __import__("pymysql")
        except ImportError:
            raise ConfigError("search.storage: mysql needs a driver; pip install pymysql") from None
    elif kind == "journal":
        _journal_path(url)


def _sqlalchemy_url(url: str) -> str:
    # SQLAlchemy 2 picks psycopg 3 for postgresql://; say so explicitly so either spelling works the same
    return re.sub(r"^postgresql://", "postgresql+psycopg://", url)


def make_storage(url: str, *, heartbeat_interval: int = 30, grace_period: int = 120):
    """An Optuna storage for ``url``. RDB storages get heartbeats: a trial whose worker stopped beating for
    ``grace_period`` seconds is failed by the next worker that starts a trial, and retried (up to twice)."""
    import warnings

    import optuna

    from .workers import RetryTrial

    kind = storage_kind(url)
    check_storage_url(url)
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = _journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if kind == "sqlite":
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif kind == "mysql":
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    from .lean_storage import LeanRDBStorage

    # the lean reads and state changes are tested on SQLite and PostgreSQL; MySQL keeps Optuna's own storage
    rdb = LeanRDBStorage if kind in ("sqlite", "postgresql") else optuna.storages.RDBStorage
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna but long-standing
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = rdb(
            _sqlalchemy_url(url), heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryTrial(),
            **kwargs,
        )
    return storage


@contextlib.contextmanager
def readable(url: str) -> Iterator[None]:
    """Turn a database that cannot be read (truncated file, wrong server, refused connection) into one line."""
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as e:
        detail = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
        raise ConfigError(f"search.storage: {url}: cannot use the study database ({detail}); if it is a "
                          "damaged file, move it away and rerun") from None


@contextlib.contextmanager
def study_lock(cfg: StudyConfig) -> Iterator[None]:
    """Exclusive across every worker of the study: a file lock next to a SQLite database or journal (one
    machine), a PostgreSQL session-level advisory lock (any number of machines)."""
    url = cfg.storage_url
    kind = storage_kind(url)
    if kind == "postgresql":
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"autokd:{cfg.name}".encode()).digest()[:8], "big", signed=True)
        with _lock_engine(url).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            released = False
            try:
                yield
            finally:
                try:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    released = True
                finally:
                    if not released:  # closing the session is what releases its lock on the server
                        conn.invalidate()
        return
    if kind == "sqlite":
        lock = Path(url.split("sqlite:///", 1)[1] + ".lock")
    elif kind == "journal":
        lock = Path(str(_journal_path(url)) + ".autokd.lock")
    else:  # mysql, memory: one machine
        lock = cfg.study_dir / ".study.lock"
    with file_lock(lock):
        yield


_LOCK_ENGINES: dict[tuple[int, str], Any] = {}


def _lock_engine(url: str):
    """This process's engine for the PostgreSQL study lock: its connection stays open between trials (a new
    one per trial cost ~6 ms). Keyed by process id, so a forked worker opens its own."""
    import os

    import sqlalchemy

    key = (os.getpid(), url)
    engine = _LOCK_ENGINES.get(key)
    if engine is None:
        close_lock_connections()  # one study at a time: at most one idle connection per process
        engine = sqlalchemy.create_engine(_sqlalchemy_url(url), pool_size=1, max_overflow=4,
                                          isolation_level="AUTOCOMMIT")  # a session lock needs no transaction
        ping_when_idle(engine)
        _LOCK_ENGINES[key] = engine
    return engine


def close_lock_connections() -> None:
    """Close this process's study-lock connections (a run's end; another study's lock)."""
    import os

    for key in [k for k in _LOCK_ENGINES if k[0] == os.getpid()]:
        _LOCK_ENGINES.pop(key).dispose()
    _LOCK_ENGINES.clear()  # a forked child drops its parent's engines without touching their sockets


def open_study(cfg: StudyConfig, *, multi_objective: bool, sampler, pruner):
    """Create the study named ``cfg.name`` in its storage, or load it (resume). Safe when several workers
    start at once: creating the storage's tables and the study happens under :func:`study_lock`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kw: dict[str, Any] = {"directions": ["maximize", "minimize"]} if multi_objective else {"direction": "maximize"}
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    with study_lock(cfg), readable(cfg.storage_url):
        storage = make_storage(cfg.storage_url, heartbeat_interval=cfg.search.heartbeat_interval,
                               grace_period=cfg.search.heartbeat_grace)
        try:
            study = optuna.create_study(storage=storage, study_name=cfg.name, sampler=sampler, pruner=pruner,
                                        load_if_exists=True, **kw)
        except ValueError as e:  # e.g. resuming with a different number of objectives
            raise ConfigError(f"search: cannot resume study {cfg.name!r}: {e}") from None
    if len(study.directions) != (2 if multi_objective else 1):
        raise ConfigError(f"search.sampler: study {cfg.name!r} was created with {len(study.directions)} "
                          f"objective(s); the sampler {cfg.search.sampler!r} needs {2 if multi_objective else 1}")
    return study


def load_study(cfg: StudyConfig):
    """The stored study, for reading (report, export, status). The storage is opened under the study lock,
    as workers create it, so a reader started beside a new study's first worker never races its schema."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.storage_url.startswith("sqlite") and not (cfg.study_dir / "study.db").is_file() and not cfg.search.storage:
        raise ConfigError(f"study {cfg.name!r} has not been run yet (no {cfg.study_dir / 'study.db'}); "
                          f"run `autokd search {cfg.source}` first")
    try:
        with readable(cfg.storage_url):
            with study_lock(cfg):  # a worker may be creating the tables right now: never race it
                storage = make_storage(cfg.storage_url)
            return optuna.load_study(study_name=cfg.name, storage=storage)
    except KeyError:
        raise ConfigError(f"study {cfg.name!r} not found in {cfg.storage_url}") from None
