"""Several writes of one trial sent to its storage at once: the storage side of :mod:`.batched_writes`.

A writer stores a trial's parameters, user attributes and intermediate values together, with exactly the rows
(or journal records) and checks of Optuna's own one-by-one calls:

- :class:`RDBWriter` (SQLite, PostgreSQL): ONE transaction -- one trial check, one query for parameter
  distributions this process has not seen, one multi-row insert of parameters, one multi-row upsert each of
  user attributes and intermediate values, in Optuna's own tables.
- :class:`JournalWriter` (Optuna's ``JournalStorage``: a journal file, Redis): ONE append of the records
  Optuna's calls would append one by one (each an open, a file lock and a write on a journal file), after the
  checks Optuna's replay makes, so that nothing of a refused group is appended.

:func:`writer_of` picks one for a live ``optuna.Trial``, or ``None`` (in-memory, gRPC proxy, anything else):
then the caller writes key by key, which is the same contract.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from .study_reads import backend_of

__all__ = ["RDBWriter", "JournalWriter", "writer_of", "upsert", "write_rows", "checked_trial"]

Params = list[tuple[str, float, Any]]  # (name, internal value, distribution), in suggestion order


def writer_of(trial: Any) -> RDBWriter | JournalWriter | None:
    """The writer for a live trial's storage, or ``None`` where only Optuna's own calls apply."""
    storage = getattr(trial, "storage", None)
    if storage is None or getattr(trial, "_trial_id", None) is None:
        return None
    import optuna

    if not isinstance(trial, optuna.Trial):
        return None
    if isinstance(storage, optuna.storages.JournalStorage):
        return JournalWriter(storage).detach(trial)
    backend = backend_of(storage)
    if isinstance(backend, optuna.storages.RDBStorage) and backend.engine.name in ("sqlite", "postgresql"):
        return RDBWriter(storage, backend)
    return None


class RDBWriter:
    """One transaction per write on SQLite or PostgreSQL (``storage`` is the study's storage: Optuna's
    ``_CachedStorage`` around ``backend``, or ``backend`` itself)."""

    def __init__(self, storage: Any, backend: Any) -> None:
        self.storage, self.backend = storage, backend
        self._cache = storage if hasattr(storage, "_trial_id_to_study_id_and_number") else None

    def known_distribution(self, trial_id: int, name: str) -> Any:
        """The distribution of parameter ``name`` that ``_CachedStorage`` holds for the trial's study, if any."""
        if self._cache is None:
            return None
        with self._cache._lock:
            study_id, _ = self._cache._trial_id_to_study_id_and_number[trial_id]
            return self._cache._studies[study_id].param_distribution.get(name)

    def write(self, trial_id: int, params: Params = (), attrs: Mapping[str, Any] | None = None,
              values: Mapping[int, float] | None = None) -> None:
        from optuna.storages._rdb.storage import _create_scoped_session

        statements = _rdb_statements(self.backend.engine.name)
        # what _CachedStorage.set_trial_param does for each parameter, for all of them in one session
        lock = self._cache._lock if self._cache is not None else contextlib.nullcontext()
        with lock:
            known: dict[str, Any] = {}
            if self._cache is not None:
                study_id, _ = self._cache._trial_id_to_study_id_and_number[trial_id]
                known = self._cache._studies[study_id].param_distribution
            with _create_scoped_session(self.backend.scoped_session) as session:
                db = session.connection()
                row = checked_trial(db, self.backend, trial_id)
                if params:
                    _insert_params(db, statements, row.study_id, trial_id, params, known)
                write_rows(db, self.backend.engine.name, trial_id, attrs, values)
            if self._cache is not None:
                for name, _value, distribution in params:
                    known.setdefault(name, distribution)


    def defer(self, trial_id: int, attrs: Mapping[str, Any], values: Mapping[int, float]) -> bool:
        """Leave ``attrs`` and ``values`` to the trial's coming state change (one transaction with it), where
        the storage offers it (``LeanRDBStorage.telling`` around the trial's last writes and its tell)."""
        defer = getattr(self.backend, "defer_until_tell", None)
        return defer is not None and defer(trial_id, attrs, values)


def checked_trial(db: Any, backend: Any, trial_id: int) -> Any:
    """The trial's row (study_id, state), with the checks Optuna's writes make first: ``KeyError`` for an
    unknown trial, Optuna's ``UpdateFinishedTrialError`` for a finished one."""
    row = db.execute(_rdb_statements(backend.engine.name)["trial"], {"id": trial_id}).one_or_none()
    if row is None:
        from optuna.storages._rdb.models import NOT_FOUND_MSG

        raise KeyError(NOT_FOUND_MSG)  # what Optuna's writes raise for an unknown trial
    backend.check_trial_is_updatable(trial_id, row.state)  # a finished trial refuses, as in Optuna
    return row


def write_rows(db: Any, dialect: str, trial_id: int, attrs: Mapping[str, Any] | None,
               values: Mapping[int, float] | None, system_attrs: Mapping[str, Any] | None = None) -> None:
    """Upsert a trial's user and system attributes (as ``set_trial_user_attr`` / ``set_trial_system_attr``
    store them: ``json.dumps``) and intermediate values (as ``Trial.report`` stores them) on the connection
    ``db``, in its transaction."""
    statements = _rdb_statements(dialect)
    if attrs:
        db.execute(statements["attrs"], [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                         for k, v in attrs.items()])
    if system_attrs:
        db.execute(statements["system_attrs"], [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                                for k, v in system_attrs.items()])
    if values:
        db.execute(statements["values"], _value_rows(trial_id, values))


_STATEMENTS: dict[str, dict[str, Any]] = {}


def _rdb_statements(dialect: str) -> dict[str, Any]:
    """The writer's statements for ``dialect``, built once (building an upsert costs more than running it on
    SQLite); rows are passed at execution (one multi-row statement per group)."""
    if dialect not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t, p = models.TrialModel, models.TrialParamModel
        _STATEMENTS[dialect] = {
            "trial": sa.select(t.study_id, t.state).where(t.trial_id == sa.bindparam("id")),
            "previous": sa.select(p.param_name, p.distribution_json).join(t, p.trial_id == t.trial_id)
                          .where(t.study_id == sa.bindparam("study"), p.param_name.in_(sa.bindparam("names",
                                                                                                    expanding=True))),
            "params": sa.insert(p),
            "attrs": upsert(dialect, models.TrialUserAttributeModel, ("trial_id", "key"), ("value_json",)),
            "system_attrs": upsert(dialect, models.TrialSystemAttributeModel, ("trial_id", "key"), ("value_json",)),
            "values": upsert(dialect, models.TrialIntermediateValueModel, ("trial_id", "step"),
                             ("intermediate_value", "intermediate_value_type")),
        }
    return _STATEMENTS[dialect]


def upsert(dialect: str, table: Any, key: tuple[str, ...], update: tuple[str, ...] | Mapping[str, Any],
           values: Mapping[str, Any] | None = None):
    """``INSERT INTO table`` (the rows given at execution, or ``values``), on a conflict of the ``key`` columns
    ``UPDATE`` the ``update`` columns from the row that was refused (or to the given expressions), in SQLite's
    or PostgreSQL's syntax."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    stmt = insert(table) if values is None else insert(table).values(**values)
    if not isinstance(update, Mapping):
        update = {c: getattr(stmt.excluded, c) for c in update}
    return stmt.on_conflict_do_update(index_elements=[getattr(table, k) for k in key], set_=dict(update))


def _value_rows(trial_id: int, values: Mapping[int, float]) -> list[dict[str, Any]]:
    """Intermediate values as ``Trial.report`` stores them (NaN and infinities by kind)."""
    from optuna.storages._rdb import models

    rows = []
    for step, value in sorted(values.items()):
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                     "intermediate_value_type": kind})
    return rows


def _insert_params(db: Any, statements: dict[str, Any], study_id: int, trial_id: int, params: Params,
                   known: Mapping[str, Any]) -> None:
    """Insert a trial's parameters as Optuna's ``_set_trial_param_without_commit`` does, one call per
    parameter, but in ONE query for the distributions earlier trials used (only for names ``known`` lacks)
    and ONE multi-row insert: each distribution must be compatible with one stored for its name in the study
    (Optuna compares with the first row it finds; every stored row passed the same check)."""
    from optuna import distributions as dists

    unknown = sorted({name for name, _, _ in params} - set(known))
    previous: dict[str, Any] = {}
    if unknown:
        for name, distribution_json in db.execute(statements["previous"], {"study": study_id, "names": unknown}):
            previous.setdefault(name, distribution_json)
    for name, _value, distribution in params:
        before = known.get(name)
        if before is None and name in previous:
            before = dists.json_to_distribution(previous[name])
        if before is not None:
            dists.check_distribution_compatibility(before, distribution)
    db.execute(statements["params"], [
        {"trial_id": trial_id, "param_name": name, "param_value": value,
         "distribution_json": dists.distribution_to_json(distribution)} for name, value, distribution in params])


class JournalWriter:
    """One append per write on Optuna's ``JournalStorage``.

    Optuna's journal calls append a record and replay the journal; the replay checks the record (the trial
    still running, a parameter's distribution compatible with the first earlier trial of the study that has
    it) and raises in the process that wrote it. Here the same checks run on the replayed journal first --
    so a refused group appends nothing, as a refused call stops Optuna's sequence -- then the records go in
    one append and the journal is replayed, which raises as Optuna's does if another process finished the
    trial in between."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def detach(self, trial: Any) -> JournalWriter:
        """Give ``trial`` its own copy of its frozen trial. The journal storage hands a live trial the very
        object its replay holds, and the trial updates it in place on each write: with Optuna's own writes
        the replay has already replaced that object with an updated copy, but a value kept for a later
        write would show in the replay (in this process only) before it is stored, or though it never is."""
        import copy

        with self.storage._thread_lock:
            if trial._cached_frozen_trial is self.storage._replay_result._trials.get(trial._trial_id):
                trial._cached_frozen_trial = copy.deepcopy(trial._cached_frozen_trial)
        return self

    def known_distribution(self, trial_id: int, name: str) -> Any:
        """The distribution the replayed journal holds for parameter ``name`` in the trial's study, if any."""
        with self.storage._thread_lock:
            return self._first_distribution(trial_id, name)

    def _first_distribution(self, trial_id: int, name: str) -> Any:
        replay = self.storage._replay_result
        study_id = replay._trial_id_to_study_id.get(trial_id)
        for other in replay._study_id_to_trial_ids.get(study_id, ()):
            distribution = replay._trials[other].distributions.get(name)
            if distribution is not None:
                return distribution
        return None

    def write(self, trial_id: int, params: Params = (), attrs: Mapping[str, Any] | None = None,
              values: Mapping[int, float] | None = None) -> None:
        from optuna.distributions import check_distribution_compatibility, distribution_to_json
        from optuna.storages.journal._storage import JournalOperation

        records: list[tuple[int, dict[str, Any]]] = []
        for name, value, distribution in params:
            records.append((JournalOperation.SET_TRIAL_PARAM, {
                "trial_id": trial_id, "param_name": name, "param_value_internal": value,
                "distribution": distribution_to_json(distribution)}))
        for key, value in (attrs or {}).items():
            records.append((JournalOperation.SET_TRIAL_USER_ATTR, {"trial_id": trial_id, "user_attr": {key: value}}))
        for step, value in sorted((values or {}).items()):
            records.append((JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
                            {"trial_id": trial_id, "step": step, "intermediate_value": value}))
        if not records:
            return
        storage = self.storage
        with storage._thread_lock:
            storage._sync_with_backend()
            replay = storage._replay_result
            worker_id = replay.worker_id
            replay._trial_exists_and_updatable(trial_id, {"worker_id": worker_id})  # raises as Optuna's replay does
            for name, _value, distribution in params:
                before = self._first_distribution(trial_id, name)
                if before is not None:
                    check_distribution_compatibility(before, distribution)
            storage._backend.append_logs([{"op_code": op, "worker_id": worker_id, **fields} for op, fields in records])
            storage._sync_with_backend()
