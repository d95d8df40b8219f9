"""Optuna's RDB storage with a trial -- or the trials a study read asks for -- read in ONE statement, and a
trial's state changed in three.

``RDBStorage.get_trial`` loads the trial row, then its parameters, values, user attributes, system attributes
and intermediate values, one query each (SQLAlchemy lazy loads), in a transaction; ``_get_trials`` -- what
every ``study.get_trials`` runs through Optuna's cache -- checks the study, loads the trial rows, then the same
five tables (select-in loads). A worker reads a trial about three times per trial (``ask``, twice in
``tell``) and the study's new and running trials about twice (the worker loop's decision, ``ask``'s waiting
trials): about 35 statements per trial plus each transaction's begin and commit, ~0.25 ms each on SQLite and
a network round trip each on PostgreSQL.

:class:`LeanRDBStorage` answers each read with ONE ``UNION ALL`` statement -- the study's row (does it
exist), the trial rows, and the rows of the five tables for those trials -- run outside a transaction (one
statement sees one consistent snapshot, so no begin and commit), and builds each ``FrozenTrial`` exactly as
``RDBStorage._build_frozen_trial_from_trial_model`` does: parameters in the order they were stored, values
by objective, infinities and NaN restored from their stored kind, datetimes from naive UTC to naive local
time. ``set_trial_state_values`` (``tell``, and ``ask`` popping a waiting trial) runs Optuna's steps -- lock
the trial row, refuse a finished trial, store the values, refuse to start a trial that is not waiting, set
the state and its datetime -- as three statements (lock, one upsert of all values, one update) instead of
the ORM's four to six; a new trial takes two (lock the study, insert it numbered) -- with, inside
:meth:`LeanRDBStorage.creating`, its worker's claim and first heartbeat in the same transaction, and the
``optuna.Trial``'s read of it answered from the creation -- a heartbeat one (upsert, outside a
transaction on PostgreSQL), and a user or system attribute two (the trial's checks, one upsert). Everything
else -- the other writes, the schema, pickling for Ray (the engine's set-up, :mod:`.connections`, is redone
on unpickling) -- is Optuna's own ``RDBStorage``. Tests compare its trials, new trials, heartbeats, attribute
writes and state changes with Optuna's on SQLite and PostgreSQL. MySQL keeps
Optuna's storage (``make_storage``).

Within :meth:`LeanRDBStorage.one_study_read` (a worker's decision and ask under the study lock; a trial's
suggestion), one read of the study's trials answers this thread's later reads of them, as of that read, with
the scope's own new trial and attribute writes joined to it; any other write ends the reuse.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Container, Iterable, Iterator
from typing import Any

import optuna

from ..trial_writers import RDBWriter, checked_trial, write_rows
from . import lean_sql as sql
from .connections import tune_engine

__all__ = ["LeanRDBStorage"]


class LeanRDBStorage(optuna.storages.RDBStorage):
    """``optuna.storages.RDBStorage`` whose reads take one statement and state changes three (see the
    module docstring), with its engine set up by :func:`connections.tune_engine`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo = threading.local()
        tune_engine(self.engine)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_memo", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._memo = threading.local()
        tune_engine(self.engine)

    def set_trial_state_values(self, trial_id: int, state: optuna.trial.TrialState,
                               values: Any = None) -> bool:
        import sqlalchemy.exc
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        s = optuna.trial.TrialState
        self._forget_study_read()
        if state.is_finished() and self.engine.name == "postgresql":
            return self._finish_in_one_statement(trial_id, state, values)
        try:
            with _create_scoped_session(self.scoped_session) as session:
                db = session.connection()
                row = db.execute(sql.lock_statement(), {"id": trial_id}).one_or_none()
                if row is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                self.check_trial_is_updatable(trial_id, row.state)
                pending = self._pending(trial_id)
                if pending is not None:  # the trial's last writes, left to this transaction
                    write_rows(db, self.engine.name, trial_id, *pending)
                if values is not None:
                    rows = []
                    for objective, v in enumerate(values):
                        stored, kind = models.TrialValueModel.value_to_stored_repr(v)
                        rows.append({"trial_id": trial_id, "objective": objective, "value": stored,
                                     "value_type": kind})
                    if rows:
                        db.execute(sql.value_upsert(self.engine.name), rows)
                if state == s.RUNNING and row.state != s.WAITING:
                    return False  # another worker started it first (the values above are kept, as in Optuna)
                change: dict[str, Any] = {"state": state}
                if state == s.RUNNING:
                    change["_datetime_start_utc"] = sql.utc_now()
                if state.is_finished():
                    change["_datetime_complete_utc"] = sql.utc_now()
                t = models.TrialModel
                db.execute(sqlalchemy.update(t).where(t.trial_id == trial_id).values(
                    {getattr(t, k): v for k, v in change.items()}))
        except sqlalchemy.exc.IntegrityError:
            return False
        if getattr(self._memo, "telling", None) == trial_id:
            self._memo.pending = None  # stored with the change
        self._told(trial_id, state, values, change)
        return True

    def _finish_in_one_statement(self, trial_id: int, state: optuna.trial.TrialState, values: Any) -> bool:
        """``set_trial_state_values`` to a finished state on PostgreSQL: the same checks and rows (with the
        trial's pending results, see :meth:`telling`) in one statement outside a transaction -- one round trip
        instead of seven (begin, lock, three upserts, update, commit)."""
        import sqlalchemy.exc
        from optuna.storages._rdb import models

        attrs, by_step = self._pending(trial_id) or ({}, {})
        params: dict[str, Any] = {"id": trial_id, "state": state.name, "complete": sql.utc_now()}
        if attrs:
            params["attr_keys"] = list(attrs)
            params["attr_json"] = [json.dumps(v) for v in attrs.values()]
        if by_step:
            steps = sorted(by_step)
            stored = [models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(by_step[k]) for k in steps]
            params.update(steps=steps, step_values=[v for v, _ in stored], step_kinds=[k.name for _, k in stored])
        objectives = list(values) if values is not None else []
        if objectives:
            stored = [models.TrialValueModel.value_to_stored_repr(v) for v in objectives]
            params.update(objectives=list(range(len(stored))), objective_values=[v for v, _ in stored],
                          objective_kinds=[k.name for _, k in stored])
        try:
            with self._connection() as db:
                before = db.execute(sql.finish_statement(bool(attrs), bool(by_step), bool(objectives)),
                                    params).scalar_one_or_none()
        except sqlalchemy.exc.IntegrityError:
            return False
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
        if before is None:
            raise KeyError(models.NOT_FOUND_MSG)
        self.check_trial_is_updatable(trial_id, optuna.trial.TrialState[before])  # nothing was changed if so
        if getattr(self._memo, "telling", None) == trial_id:
            self._memo.pending = None  # stored with the change
        self._told(trial_id, state, values, {"_datetime_complete_utc": params["complete"]})
        return True

    @contextlib.contextmanager
    def telling(self, trial_id: int) -> Iterator[None]:
        """Within (around a trial's last writes and ``study.tell`` of ``trial_id``, in this thread):

        - user attributes and intermediate values that ``grouped_writes(until_tell=True)`` leaves (the
          trial's results) are stored in the transaction of its state change, and reads of the trial show
          them until then; with no state change (``tell`` skipped a trial another worker failed), they are
          written on their own when the scope ends (refused, as any write, if the trial is finished);
        - the read of the told trial after its state change is answered from the read before it plus the
          change, not read again. Optuna's ``tell`` reads the trial, hands it to the sampler, changes its
          state, and reads it again to return it; a write to the trial through this storage in between (a
          sampler's system attribute) drops the answer."""
        self._memo.telling, self._memo.before, self._memo.pending = trial_id, None, None
        try:
            yield
        finally:
            pending = self._pending(trial_id)
            self._memo.telling = self._memo.before = self._memo.trial = self._memo.pending = None
            if pending is not None:
                RDBWriter(self, self).write(trial_id, (), *pending)

    def defer_until_tell(self, trial_id: int, attrs: dict[str, Any], values: dict[int, float]) -> bool:
        """Keep a trial's last writes for its state change (see :meth:`telling`); ``False`` outside it."""
        if getattr(self._memo, "telling", None) != trial_id:
            return False
        held_attrs, held_values = self._memo.pending or ({}, {})
        self._memo.pending = ({**held_attrs, **attrs}, {**held_values, **values})
        self._memo.before = self._memo.trial = None
        return True

    def _pending(self, trial_id: int) -> tuple[dict[str, Any], dict[int, float]] | None:
        if getattr(self._memo, "telling", None) != trial_id:
            return None
        return getattr(self._memo, "pending", None)

    def _told(self, trial_id: int, state: optuna.trial.TrialState, values: Any, change: dict[str, Any]) -> None:
        before, self._memo.before = getattr(self._memo, "before", None), None
        if before is None or before._trial_id != trial_id or getattr(self._memo, "telling", None) != trial_id:
            return
        before.state = state
        if values is not None:
            before.values = [float(v) for v in values]
        if "_datetime_start_utc" in change:
            before.datetime_start = sql.local_time(change["_datetime_start_utc"])
        if "_datetime_complete_utc" in change:
            before.datetime_complete = sql.local_time(change["_datetime_complete_utc"])
        self._memo.trial = before

    def _wrote(self, trial_id: int, keep_study_read: bool = False) -> None:
        """A write to ``trial_id``: what a memo holds of it is no longer the stored trial (``keep_study_read``:
        the caller brings this scope's study read up to date itself)."""
        if not keep_study_read:
            self._forget_study_read()
        for name in ("before", "trial"):
            held = getattr(self._memo, name, None)
            if held is not None and held._trial_id == trial_id:
                setattr(self._memo, name, None)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._wrote(trial_id, keep_study_read=True)
        self._set_attrs(trial_id, {key: value}, None)
        self._study_read_takes(trial_id, "user_attrs", key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._wrote(trial_id, keep_study_read=True)
        self._set_attrs(trial_id, None, {key: value})  # e.g. TPE's relative parameters (constant liar)
        self._study_read_takes(trial_id, "system_attrs", key, value)

    def _set_attrs(self, trial_id: int, user: dict[str, Any] | None, system: dict[str, Any] | None) -> None:
        """Optuna's attribute write -- the trial's checks (``KeyError``, ``UpdateFinishedTrialError``), one
        upsert, a racing duplicate ignored -- in two statements, without the ORM's trial object (~2 ms of
        Python on SQLite per write)."""
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session, True) as session:
            db = session.connection()
            checked_trial(db, self, trial_id)
            write_rows(db, self.engine.name, trial_id, user, None, system)

    def _study_read_takes(self, trial_id: int, field: str, key: str, value: Any) -> None:
        """An attribute just stored joins this scope's study read (as JSON stores it); a read that does not
        hold the trial is forgotten."""
        held = getattr(self._memo, "study_read", None)
        if held is None or held[1] is None:
            return
        included, above, trials = held[1]
        at = next((i for i, t in enumerate(trials) if t._trial_id == trial_id), None)
        if at is None:
            self._forget_study_read()
            return
        trial = copy.deepcopy(trials[at])  # the read's trials are also Optuna's cache's: not changed in place
        getattr(trial, field)[key] = json.loads(json.dumps(value))
        self._memo.study_read = (held[0], (included, above, [*trials[:at], trial, *trials[at + 1:]]))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._wrote(trial_id)
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def _set_trial_param(self, trial_id: int, *args: Any, **kwargs: Any) -> None:
        self._wrote(trial_id)
        super()._set_trial_param(trial_id, *args, **kwargs)

    def _create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None
                          ) -> optuna.trial.FrozenTrial:
        """A new RUNNING trial as Optuna creates it -- under a lock on the study's row, numbered by the
        study's trials created before it -- in two statements (lock; insert numbered by a count of the study's
        trials) instead of the ORM's four and its flushes; within :meth:`creating`, with its user attributes
        and first heartbeat in the same transaction. Retried like Optuna's on a storage error (a deadlock).
        From a template: Optuna's."""
        if template_trial is not None:
            self._forget_study_read()
            return super()._create_new_trial(study_id, template_trial)
        import random
        import time

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        attrs, beat = getattr(self._memo, "extra", None) or ({}, False)
        for attempt in range(1, 6):  # Optuna's MAX_RETRIES
            start = sql.utc_now()
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    db = session.connection()
                    if db.execute(sql.study_lock_statement(), {"id": study_id}).one_or_none() is None:
                        raise KeyError(models.NOT_FOUND_MSG)
                    row = db.execute(sql.new_trial_statement(), {
                        "study": study_id, "state": optuna.trial.TrialState.RUNNING, "start": start}).one()
                    if attrs:  # as set_trial_user_attr stores them
                        db.execute(sql.user_attr_insert(), [{"trial_id": row.trial_id, "key": k,
                                                          "value_json": json.dumps(v)} for k, v in attrs.items()])
                    if beat:
                        db.execute(sql.heartbeat_upsert(self.engine.name), {"trial_id": row.trial_id})
                created = optuna.trial.FrozenTrial(
                    number=row.number, state=optuna.trial.TrialState.RUNNING, value=None, values=None,
                    datetime_start=sql.local_time(start), datetime_complete=None, params={}, distributions={},
                    user_attrs=json.loads(json.dumps(attrs)), system_attrs={}, intermediate_values={},
                    trial_id=row.trial_id)
                if getattr(self._memo, "extra", None) is not None:  # Optuna's cache keeps `created`: a copy
                    self._memo.trial = copy.deepcopy(created)
                self._read_also(study_id, created)
                return created
            except optuna.exceptions.StorageInternalError:
                if attempt == 5:
                    raise
                time.sleep(random.random() * 2.0)  # Optuna's back-off
        raise AssertionError("unreachable")

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat row (inserted with the database's current time, then set to it) in one upsert
        instead of a read, a locked read and a write; one statement, so on PostgreSQL outside a transaction.
        A trial that is gone is ignored and a database error raised as Optuna's session does."""
        import sqlalchemy.exc

        try:
            with self._connection() as db:
                db.execute(sql.heartbeat_upsert(self.engine.name), {"trial_id": trial_id})
                db.commit()
        except sqlalchemy.exc.IntegrityError:
            return  # the trial is gone (PostgreSQL's foreign key): ignored, as by Optuna
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A connection for ONE statement (it reads one consistent snapshot, or writes atomically): on
        PostgreSQL outside a transaction (a begin and its end are two more round trips), on SQLite in the
        connection's own (its begin and end are local and cheaper than switching to autocommit and back)."""
        with self.engine.connect() as db:
            if self.engine.name == "postgresql":
                db = db.execution_options(isolation_level="AUTOCOMMIT")
            yield db

    def _read(self, statement, params: dict[str, Any]) -> list[Any]:
        with self._connection() as db:
            return list(db.execute(statement, params))

    @contextlib.contextmanager
    def creating(self, user_attrs: dict[str, Any] | None = None, heartbeat: bool = False) -> Iterator[None]:
        """Within: a new trial this thread creates is stored with ``user_attrs`` and (``heartbeat``) its first
        heartbeat in its creation's transaction, and its first ``get_trial`` is answered from the creation,
        not read. For ``optuna.Trial(study, create_new_trial(...))``, whose first step reads the trial just
        made (nothing writes to a new trial before its ``Trial`` exists); any other read reads the database."""
        self._memo.extra = (dict(user_attrs or {}), bool(heartbeat))
        try:
            yield
        finally:
            self._memo.extra, self._memo.trial = None, None

    @contextlib.contextmanager
    def one_study_read(self, study_id: int) -> Iterator[None]:
        """Within: the first read of the study's trials (``_get_trials``: every ``study.get_trials`` through
        Optuna's cache) reads the database; this thread's later reads of them are answered from it, as of that
        moment. A trial this thread creates and the attributes it sets join the read; any other write through
        this storage (a parameter, an intermediate value, a state change, a trial from a template) ends the
        reuse, and the next read reads the database again.

        For a trial's suggestion: Optuna's TPE with ``constant_liar`` (its default) reads the study at every
        sampler call, where without it Optuna reads once per trial (``Study._get_trials(use_cache=True)``).
        Answered from the first read, each later one returns exactly what that read held of the trials it
        asks for -- a trial another worker started or finished meanwhile shows at the next trial, as if it
        had happened just after this suggestion."""
        self._memo.study_read = (study_id, None)
        try:
            yield
        finally:
            self._memo.study_read = None

    def _forget_study_read(self) -> None:
        held = getattr(self._memo, "study_read", None)
        if held is not None:
            self._memo.study_read = (held[0], None)

    def _read_also(self, study_id: int, created: optuna.trial.FrozenTrial) -> None:
        """A trial this thread just created joins this scope's read, which then holds what a read now would
        (the read asked for every trial above an id, and new trials are numbered above it); else the read is
        forgotten."""
        held = getattr(self._memo, "study_read", None)
        if held is None or held[1] is None:
            return
        included, above, trials = held[1]
        if held[0] != study_id or created._trial_id <= above:
            self._forget_study_read()
            return
        self._memo.study_read = (study_id, (included, above, [*trials, copy.deepcopy(created)]))

    def _reused_read(self, study_id: int, included: list[int], above: int
                     ) -> list[optuna.trial.FrozenTrial] | None:
        """The trials of ``study_id`` with an id in ``included`` or above ``above``, from this scope's first
        read, if that read covered all of them (it asked for every trial above an id no higher, and for
        every listed one not above it); else ``None``."""
        held = getattr(self._memo, "study_read", None)
        if held is None or held[0] != study_id or held[1] is None:
            return None
        first_included, first_above, trials = held[1]
        if above < first_above or not set(i for i in included if i <= first_above) <= first_included:
            return None
        keep = set(included)
        return [t for t in trials if t._trial_id in keep or t._trial_id > above]

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        """The trial, in one statement (see :meth:`creating` and :meth:`telling` for the reads answered from
        what this thread has just stored)."""
        from optuna.storages._rdb import models

        held, self._memo.trial = getattr(self._memo, "trial", None), None
        if held is not None and held._trial_id == trial_id:
            return held
        _, trials = sql.by_trial(self._read(sql.trial_statement(), {"id": trial_id}))
        if not trials:
            raise KeyError(models.NOT_FOUND_MSG)
        if getattr(self._memo, "telling", None) != trial_id:
            return sql.frozen_trial(trials[0])
        self._memo.before = self._with_pending(sql.frozen_trial(trials[0]))  # built twice: the caller may
        return self._with_pending(sql.frozen_trial(trials[0]))  # change its copy

    def _with_pending(self, frozen: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
        """The trial as it will be stored with its pending writes (attributes as JSON stores them)."""
        pending = self._pending(frozen._trial_id)
        if pending is not None:
            attrs, values = pending
            frozen.user_attrs.update({k: json.loads(json.dumps(v)) for k, v in attrs.items()})
            frozen.intermediate_values.update({int(k): float(v) for k, v in values.items()})
        return frozen

    def _get_trials(self, study_id: int, states: Container[optuna.trial.TrialState] | None,
                    included_trial_ids: set[int], trial_id_greater_than: int) -> list[optuna.trial.FrozenTrial]:
        import sqlalchemy.exc
        from optuna.storages._rdb import models

        included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)  # as Optuna narrows them
        if states is None:
            reused = self._reused_read(study_id, included, trial_id_greater_than)
            if reused is not None:
                return reused
        params: dict[str, Any] = {"study": study_id}
        if states is not None:
            assert isinstance(states, Iterable)
            params["states"] = list(states)
        narrowing = ""
        if trial_id_greater_than > -1:
            params["above"] = trial_id_greater_than
            narrowing = ">"
            if included:
                params["ids"], narrowing = included, "in>"
        try:
            rows = self._read(sql.trials_statement(states is not None, narrowing, self.engine.name), params)
        except sqlalchemy.exc.OperationalError:  # too many ids for IN: Optuna falls back the same way
            params.pop("ids", None)
            params.pop("above", None)
            rows = self._read(sql.trials_statement(states is not None, "", self.engine.name), params)
            keep = set(included)
            rows = [r for r in rows if r.kind == sql.STUDY or r.trial_id in keep or r.trial_id > trial_id_greater_than]
        study, trials = sql.by_trial(rows)
        if not study:
            raise KeyError(models.NOT_FOUND_MSG)  # as Optuna's StudyModel.find_or_raise_by_id
        frozen = [sql.frozen_trial(t) for t in trials]
        held = getattr(self._memo, "study_read", None)
        if states is None and held is not None and held[0] == study_id and held[1] is None:
            self._memo.study_read = (study_id, (set(included), trial_id_greater_than, frozen))
        return frozen
