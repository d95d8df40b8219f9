"""Several user attributes of one trial in ONE storage write.

Optuna offers only ``Trial.set_user_attr`` (one key per call). On an RDB storage every call is its own session:
it loads the trial row, checks that it is still updatable, upserts one row and commits -- about 1 ms each on
SQLite in WAL mode and a network round trip or three on PostgreSQL. A trial records about 15 attributes, so
autokd writes them in groups (what a trial is before it trains; what it produced) and this module turns each
group into one transaction: one trial check and one multi-row upsert into Optuna's own
``trial_user_attributes`` table, with the very values ``set_user_attr`` would store (``json.dumps``), so
Optuna, optuna-dashboard and older autokd read them as before.

Only the RDB storage (SQLite, PostgreSQL) is written this way, through the storage's own session factory and
models; any other storage (in-memory, journal file, gRPC proxy) and anything that is not a live
``optuna.Trial`` (a ``FrozenTrial`` under construction, a plain mapping with ``set_user_attr``) gets one
``set_user_attr`` per key, which is the same contract, key by key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["set_user_attrs"]


def set_user_attrs(trial: Any, attrs: Mapping[str, Any]) -> None:
    """Store every ``key: value`` of ``attrs`` as a user attribute of ``trial`` (one write where the storage
    allows it; see the module docstring)."""
    if not attrs:
        return
    if len(attrs) > 1 and _rdb_upsert(trial, attrs):
        return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _rdb_backend(trial: Any):
    """The ``RDBStorage`` behind a live trial on SQLite or PostgreSQL, else ``None``."""
    storage = getattr(trial, "storage", None)
    if storage is None or getattr(trial, "_trial_id", None) is None:
        return None
    import optuna
    from optuna.storages._cached_storage import _CachedStorage

    if not isinstance(trial, optuna.Trial):
        return None
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    return backend if backend.engine.name in ("sqlite", "postgresql") else None


def _rdb_upsert(trial: Any, attrs: Mapping[str, Any]) -> bool:
    backend = _rdb_backend(trial)
    if backend is None:
        return False
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if backend.engine.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    trial_id = trial._trial_id
    table = models.TrialUserAttributeModel
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    with _create_scoped_session(backend.scoped_session) as session:
        row = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, row.state)  # a finished trial refuses, as set_user_attr does
        stmt = insert(table).values(rows)
        session.execute(stmt.on_conflict_do_update(index_elements=[table.trial_id, table.key],
                                                   set_={"value_json": stmt.excluded.value_json}))
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr keeps in step with storage
    return True
