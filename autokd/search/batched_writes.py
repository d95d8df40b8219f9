"""Fewer, larger storage writes for what a trial records: several user attributes in ONE write
(:func:`set_user_attrs`), per-epoch intermediate values written at most once a second
(:class:`IntermediateValues`), and everything a trial writes at one step -- its suggested parameters and
recipe record before training, its last intermediate values and metrics after -- in ONE transaction
(:func:`grouped_writes`).

Optuna offers only ``Trial.set_user_attr`` (one key per call). On an RDB storage every call is its own session:
it loads the trial row, checks that it is still updatable, upserts one row and commits -- about 1 ms each on
SQLite in WAL mode and a network round trip or three on PostgreSQL. A trial records about 15 attributes, so
autokd writes them in groups (what a trial is before it trains; what it produced) and this module turns each
group into one transaction: one trial check and one multi-row upsert into Optuna's own
``trial_user_attributes`` table, with the very values ``set_user_attr`` would store (``json.dumps``), so
Optuna, optuna-dashboard and older autokd read them as before.

Each ``trial.suggest_*`` is its own transaction the same way (trial check, a query for the parameter's
distribution in earlier trials unless cached, insert, commit: ~0.8 ms on SQLite, ~2 ms on PostgreSQL), and a
recipe takes 4-8 of them. Inside :func:`grouped_writes` they are checked and kept, then written in one
transaction through Optuna's own ``_set_trial_param_without_commit`` (the same rows and checks), together
with the user attributes and intermediate values written in the same group.

Intermediate values (``Trial.report``) are one write per epoch the same way (~1 ms on SQLite, ~3 ms on
PostgreSQL: 15-45 ms for a 15-epoch trial). :class:`IntermediateValues` keeps each value in the live trial at
once -- the pruner reads it from there, exactly as after ``Trial.report`` -- and writes the first at once (a
running trial shows progress from its first epoch), then the pending ones in one statement when a second
has passed since the last write, and when the trial's training ends.

Only the RDB storage (SQLite, PostgreSQL) is written this way, through the storage's own session factory and
models; any other storage (in-memory, journal file, gRPC proxy) and anything that is not a live
``optuna.Trial`` (a ``FrozenTrial`` under construction, a plain mapping with ``set_user_attr``) gets one
``set_user_attr`` per key, which is the same contract, key by key.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["set_user_attrs", "grouped_writes", "IntermediateValues"]


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


def _upsert_stmt(backend, table, rows: list[dict[str, Any]], key: tuple[str, str], value_columns: tuple[str, ...]):
    """Insert ``rows`` into ``table``, updating ``value_columns`` of rows whose ``key`` columns exist."""
    if backend.engine.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    stmt = insert(table).values(rows)
    return stmt.on_conflict_do_update(index_elements=[getattr(table, k) for k in key],
                                      set_={c: getattr(stmt.excluded, c) for c in value_columns})


def _attrs_upsert(backend, trial_id: int, attrs: Mapping[str, Any]):
    """The user attributes as ``set_user_attr`` stores them (``json.dumps``)."""
    from optuna.storages._rdb import models

    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    return _upsert_stmt(backend, models.TrialUserAttributeModel, rows, ("trial_id", "key"), ("value_json",))


def _values_upsert(backend, trial_id: int, values: Mapping[int, float]):
    """Intermediate values as ``Trial.report`` stores them (NaN and infinities by kind)."""
    from optuna.storages._rdb import models

    table = models.TrialIntermediateValueModel
    rows = []
    for step, value in sorted(values.items()):
        stored, kind = table.intermediate_value_to_stored_repr(value)
        rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                     "intermediate_value_type": kind})
    return _upsert_stmt(backend, table, rows, ("trial_id", "step"), ("intermediate_value", "intermediate_value_type"))


def _write(backend, trial_id: int, stmt) -> None:
    """One transaction: check that the trial is still updatable, then execute ``stmt``."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session) as session:
        row = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, row.state)  # a finished trial refuses, as Optuna's writes do
        session.execute(stmt)


def _rdb_upsert(trial: Any, attrs: Mapping[str, Any]) -> bool:
    group = _group_of(trial)
    if group is not None:  # inside grouped_writes: written with the rest of the group
        group.attrs.update(attrs)
        trial._cached_frozen_trial.user_attrs.update(attrs)
        return True
    backend = _rdb_backend(trial)
    if backend is None:
        return False
    _write(backend, trial._trial_id, _attrs_upsert(backend, trial._trial_id, attrs))
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr keeps in step with storage
    return True


class _Group:
    """The trial's storage, except that this trial's parameters and user attributes are kept for one write."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self.params: list[tuple[str, float, Any]] = []
        self.attrs: dict[str, Any] = {}
        self.values: dict[int, float] = {}

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: Any) -> None:
        if trial_id != self._trial_id:
            self._storage.set_trial_param(trial_id, name, value, distribution)
            return
        from optuna.distributions import check_distribution_compatibility

        known = _known_distribution(self._storage, trial_id, name)
        if known is not None:  # the error Optuna raises at this call, raised at the same call
            check_distribution_compatibility(known, distribution)
        self.params.append((name, value, distribution))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id != self._trial_id:
            self._storage.set_trial_user_attr(trial_id, key, value)
            return
        self.attrs[key] = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _known_distribution(storage: Any, trial_id: int, name: str) -> Any:
    """The distribution that ``_CachedStorage`` holds for parameter ``name`` of the trial's study, if any."""
    with storage._lock:
        study_id, _ = storage._trial_id_to_study_id_and_number[trial_id]
        return storage._studies[study_id].param_distribution.get(name)


def _group_of(trial: Any) -> _Group | None:
    storage = getattr(trial, "storage", None)
    return storage if isinstance(storage, _Group) else None


@contextlib.contextmanager
def grouped_writes(trial: Any) -> Iterator[None]:
    """Inside: ``trial.suggest_*``, ``trial.set_user_attr``, :func:`set_user_attrs` and
    :meth:`IntermediateValues.flush` of ``trial`` act on the live trial at once (it holds every value, as
    after Optuna's own writes); on leaving, they reach an RDB storage in ONE transaction, with the checks
    Optuna's writes make (trial still running, parameter distributions compatible with the study's).

    Leaving by an exception writes them too (they are what Optuna would have stored before the exception),
    unless that write fails: then the original exception goes on. Inside a group, another group is the same
    group. Other storages are written at each call, as usual."""
    storage = getattr(trial, "storage", None)
    backend = None if _group_of(trial) is not None else _rdb_backend(trial)
    if backend is None or not hasattr(storage, "_trial_id_to_study_id_and_number"):
        yield
        return
    group = _Group(storage, trial._trial_id)
    trial.storage = group
    try:
        yield
    except BaseException:
        trial.storage = storage
        with contextlib.suppress(Exception):
            _write_group(storage, backend, trial._trial_id, group)
        raise
    trial.storage = storage
    _write_group(storage, backend, trial._trial_id, group)


def _write_group(storage: Any, backend: Any, trial_id: int, group: _Group) -> None:
    if not (group.params or group.attrs or group.values):
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with storage._lock:  # what _CachedStorage.set_trial_param does, for every parameter in one session
        study_id, _ = storage._trial_id_to_study_id_and_number[trial_id]
        known = storage._studies[study_id].param_distribution
        with _create_scoped_session(backend.scoped_session) as session:
            row = models.TrialModel.find_or_raise_by_id(trial_id, session)
            backend.check_trial_is_updatable(trial_id, row.state)  # a finished trial refuses, as Optuna's writes do
            for name, value, distribution in group.params:
                backend._set_trial_param_without_commit(session, trial_id, name, value, distribution,
                                                        known.get(name))
            if group.attrs:
                session.execute(_attrs_upsert(backend, trial_id, group.attrs))
            if group.values:
                session.execute(_values_upsert(backend, trial_id, group.values))
        for name, _value, distribution in group.params:
            known.setdefault(name, distribution)


class IntermediateValues:
    """``report(value, step)`` for one live trial, as ``Trial.report`` (same checks; a step reported twice is
    ignored), with the storage writes grouped: the value is in the live trial at once (``should_prune`` and
    the pruner read it there) and reaches an RDB storage at once for the first one, else within
    ``interval_s`` seconds of the last write, or at :meth:`flush`,
    which the caller runs when training ends, before the trial is told. Other storages are written at once."""

    def __init__(self, trial: Any, interval_s: float = 1.0) -> None:
        self.trial, self.interval_s = trial, float(interval_s)
        self.backend = _rdb_backend(trial)
        self.pending: dict[int, float] = {}
        self.last = -float("inf")  # the first value is written at once: a trial shows progress from epoch 0

    def report(self, value: float, step: int) -> None:
        if self.backend is None:
            self.trial.report(value, step)
            return
        value, step = float(value), int(step)
        if step < 0:
            raise ValueError(f"step must be non-negative (got {step})")
        cached = self.trial._cached_frozen_trial.intermediate_values
        if step in cached:
            return
        cached[step] = value
        self.pending[step] = value
        if time.monotonic() - self.last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Write the pending values (one statement; inside :func:`grouped_writes`, with the group)."""
        if not self.pending:
            return
        group = _group_of(self.trial)
        if group is not None:
            group.values.update(self.pending)
        else:
            _write(self.backend, self.trial._trial_id, _values_upsert(self.backend, self.trial._trial_id,
                                                                      self.pending))
        self.pending.clear()
        self.last = time.monotonic()
