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
``optuna.Trial``'s read of it answered from the creation -- and a heartbeat one (upsert, outside a
transaction on PostgreSQL). Everything else -- the other writes, the schema, pickling for Ray (the engine's
set-up, :mod:`.connections`, is redone on unpickling) -- is Optuna's own ``RDBStorage``. Tests compare its
trials, new trials, heartbeats and state changes with Optuna's on SQLite and PostgreSQL. MySQL keeps
Optuna's storage (``make_storage``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import threading
from collections.abc import Container, Iterable, Iterator
from typing import Any

import optuna

from .connections import tune_engine

__all__ = ["LeanRDBStorage"]

_STUDY, _TRIAL, _PARAM, _VALUE, _USER, _SYSTEM, _STEP = range(-2, 5)
_STATEMENTS: dict[Any, Any] = {}


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """What ``TrialModel.datetime_start``/``datetime_complete`` return: naive UTC as naive local time."""
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


def _read_statement(trials_where: Any, study: bool):
    """ONE ``UNION ALL`` of (the study's row when ``study``,) the trial rows that ``trials_where`` selects and
    the rows of the five child tables for those trials, as (kind, trial_id, order, i, name, f, text, k, d1, d2);
    each column typed the same in every branch (enums as their stored names, the trial's datetimes in d1, d2)."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    def null(t):
        return sa.cast(sa.null(), t)

    float_t = sa.Float(precision=53)
    t = models.TrialModel
    selected = sa.select(t.trial_id).where(trials_where)

    def branch(kind, table, order, integer=None, name=None, number=None, text=None, kind_name=None,
               start=None, complete=None):
        return sa.select(
            sa.literal(kind, sa.Integer).label("kind"), table.trial_id.label("trial_id"), order.label("ord"),
            (integer if integer is not None else null(sa.Integer)).label("i"),
            (sa.cast(name, sa.String) if name is not None else null(sa.String)).label("name"),
            (number if number is not None else null(float_t)).label("f"),
            (sa.cast(text, sa.Text) if text is not None else null(sa.Text)).label("text"),
            (sa.cast(kind_name, sa.String) if kind_name is not None else null(sa.String)).label("k"),
            (start if start is not None else null(sa.DateTime)).label("d1"),
            (complete if complete is not None else null(sa.DateTime)).label("d2"),
        ).where(table.trial_id.in_(selected) if table is not t else trials_where)

    p, v, u = models.TrialParamModel, models.TrialValueModel, models.TrialUserAttributeModel
    sy, iv, st = models.TrialSystemAttributeModel, models.TrialIntermediateValueModel, models.StudyModel
    branches = []
    if study:
        branches.append(sa.select(
            sa.literal(_STUDY, sa.Integer).label("kind"), null(sa.Integer).label("trial_id"),
            st.study_id.label("ord"), null(sa.Integer).label("i"), null(sa.String).label("name"),
            null(float_t).label("f"), null(sa.Text).label("text"), null(sa.String).label("k"),
            null(sa.DateTime).label("d1"), null(sa.DateTime).label("d2"),
        ).where(st.study_id == sa.bindparam("study")))
    branches += [
        branch(_TRIAL, t, t.trial_id, integer=t.number, kind_name=t.state, start=t._datetime_start_utc,
               complete=t._datetime_complete_utc),
        branch(_PARAM, p, p.param_id, name=p.param_name, number=p.param_value, text=p.distribution_json),
        branch(_VALUE, v, v.trial_value_id, integer=v.objective, number=v.value, kind_name=v.value_type),
        branch(_USER, u, u.trial_user_attribute_id, name=u.key, text=u.value_json),
        branch(_SYSTEM, sy, sy.trial_system_attribute_id, name=sy.key, text=sy.value_json),
        branch(_STEP, iv, iv.trial_intermediate_value_id, integer=iv.step, number=iv.intermediate_value,
               kind_name=iv.intermediate_value_type),
    ]
    return sa.union_all(*branches)


def _trials_statement(has_states: bool, narrowing: str, dialect: str):
    """The read of a study's trials (``_get_trials``), built once per shape (building it costs more than
    running it on SQLite): ``narrowing`` is "" (all), ">" (ids above a bound) or "in>" (listed ids or above).

    On PostgreSQL the listed ids are ONE array parameter (``= ANY``), not one placeholder each: the text
    stays the same whatever their number, so the driver prepares it and the server plans it once (planning
    this union took ~1 ms of the server's time on every read)."""
    key = ("trials", has_states, narrowing, dialect == "postgresql")
    if key not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t = models.TrialModel
        where = [t.study_id == sa.bindparam("study")]
        if has_states:
            where.append(t.state.in_(sa.bindparam("states", expanding=True)))
        if narrowing == ">":
            where.append(t.trial_id > sa.bindparam("above"))
        elif narrowing == "in>":
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import ARRAY

                listed = t.trial_id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.Integer)))
            else:
                listed = t.trial_id.in_(sa.bindparam("ids", expanding=True))
            where.append(sa.or_(listed, t.trial_id > sa.bindparam("above")))
        _STATEMENTS[key] = _read_statement(sa.and_(*where), study=True)
    return _STATEMENTS[key]


def _trial_statement():
    """The read of one trial (``get_trial``), built once."""
    if "trial" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        _STATEMENTS["trial"] = _read_statement(models.TrialModel.trial_id == sa.bindparam("id"), study=False)
    return _STATEMENTS["trial"]


def _lock_statement():
    """The trial's state, its row locked ("FOR UPDATE" on PostgreSQL; SQLite serialises its writes anyway)."""
    if "lock" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t = models.TrialModel
        _STATEMENTS["lock"] = sa.select(t.state).where(t.trial_id == sa.bindparam("id")).with_for_update()
    return _STATEMENTS["lock"]


def _value_upsert(dialect: str):
    """Insert a trial's objective values, replacing those it has (Optuna's find-then-insert-or-update)."""
    key = f"values-{dialect}"
    if key not in _STATEMENTS:
        from optuna.storages._rdb import models

        from ..trial_writers import upsert

        _STATEMENTS[key] = upsert(dialect, models.TrialValueModel, ("trial_id", "objective"),
                                  ("value", "value_type"))
    return _STATEMENTS[key]


def _new_trial_statement():
    """Insert a trial numbered by the count of the study's trials (under the study's row lock: those created
    before it), returning its id and number."""
    if "new-trial" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t = models.TrialModel
        before = sa.select(sa.func.count(t.trial_id)).where(t.study_id == sa.bindparam("study")).scalar_subquery()
        _STATEMENTS["new-trial"] = sa.insert(t).values(
            study_id=sa.bindparam("study"), number=before, state=sa.bindparam("state", type_=t.state.type),
            _datetime_start_utc=sa.bindparam("start", type_=t._datetime_start_utc.type),
        ).returning(t.trial_id, t.number)
    return _STATEMENTS["new-trial"]


def _user_attr_insert():
    """A new trial's user attributes (rows given at execution)."""
    if "user-attrs" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        _STATEMENTS["user-attrs"] = sa.insert(models.TrialUserAttributeModel)
    return _STATEMENTS["user-attrs"]


def _study_lock_statement():
    """The study's row, locked while a trial is created (its number counts the trials before it)."""
    if "study-lock" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        study = models.StudyModel
        _STATEMENTS["study-lock"] = sa.select(study.study_id).where(
            study.study_id == sa.bindparam("id")).with_for_update()
    return _STATEMENTS["study-lock"]


def _heartbeat_upsert(dialect: str):
    """A trial's heartbeat row: inserted at the database's current time, or set to it (Optuna's values)."""
    key = f"heartbeat-{dialect}"
    if key not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        from ..trial_writers import upsert

        _STATEMENTS[key] = upsert(dialect, models.TrialHeartbeatModel, ("trial_id",), {"heartbeat": sa.func.now()},
                                  values={"trial_id": sa.bindparam("trial_id"),
                                          "heartbeat": sa.func.current_timestamp()})
    return _STATEMENTS[key]


def _utc_now() -> datetime.datetime:
    """What Optuna stores for ``datetime.now()``: the time as naive UTC."""
    return datetime.datetime.now().astimezone(datetime.timezone.utc).replace(tzinfo=None)


def _frozen(rows: list[Any]) -> optuna.trial.FrozenTrial:
    """``RDBStorage._build_frozen_trial_from_trial_model`` from one trial's rows (its own row first)."""
    from optuna import distributions
    from optuna.storages._rdb import models

    value_kind = models.TrialValueModel.TrialValueType
    step_kind = models.TrialIntermediateValueModel.TrialIntermediateValueType
    trial = rows[0]
    objectives: dict[int, float] = {}
    params, dists, user, system, steps = {}, {}, {}, {}, {}
    for r in rows[1:]:
        if r.kind == _PARAM:
            dist = distributions.json_to_distribution(r.text)
            params[r.name], dists[r.name] = dist.to_external_repr(r.f), dist
        elif r.kind == _VALUE:
            objectives[r.i] = models.TrialValueModel.stored_repr_to_value(r.f, value_kind[r.k])
        elif r.kind == _USER:
            user[r.name] = json.loads(r.text)
        elif r.kind == _SYSTEM:
            system[r.name] = json.loads(r.text)
        else:
            steps[r.i] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(r.f, step_kind[r.k])
    values = None
    if objectives:
        values = [0 for _ in objectives]
        for objective, value in objectives.items():
            values[objective] = value
    return optuna.trial.FrozenTrial(
        number=trial.i, state=optuna.trial.TrialState[trial.k], value=None, values=values,
        datetime_start=_local(trial.d1), datetime_complete=_local(trial.d2), params=params, distributions=dists,
        user_attrs=user, system_attrs=system, intermediate_values=steps, trial_id=trial.trial_id)


def _by_trial(rows: Any) -> tuple[bool, list[list[Any]]]:
    """(whether the study's row came, each trial's rows in trial id order, its own row first)."""
    study = False
    trials: dict[int, list[Any]] = {}
    for r in sorted(rows, key=lambda r: (r.kind, r.ord)):  # trial rows sort before their children
        if r.kind == _STUDY:
            study = True
        elif r.kind == _TRIAL:
            trials[r.trial_id] = [r]
        else:
            trials[r.trial_id].append(r)
    return study, [trials[i] for i in sorted(trials)]


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
        try:
            with _create_scoped_session(self.scoped_session) as session:
                db = session.connection()
                row = db.execute(_lock_statement(), {"id": trial_id}).one_or_none()
                if row is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                self.check_trial_is_updatable(trial_id, row.state)
                if values is not None:
                    rows = []
                    for objective, v in enumerate(values):
                        stored, kind = models.TrialValueModel.value_to_stored_repr(v)
                        rows.append({"trial_id": trial_id, "objective": objective, "value": stored,
                                     "value_type": kind})
                    if rows:
                        db.execute(_value_upsert(self.engine.name), rows)
                if state == s.RUNNING and row.state != s.WAITING:
                    return False  # another worker started it first (the values above are kept, as in Optuna)
                change: dict[str, Any] = {"state": state}
                if state == s.RUNNING:
                    change["_datetime_start_utc"] = _utc_now()
                if state.is_finished():
                    change["_datetime_complete_utc"] = _utc_now()
                t = models.TrialModel
                db.execute(sqlalchemy.update(t).where(t.trial_id == trial_id).values(
                    {getattr(t, k): v for k, v in change.items()}))
        except sqlalchemy.exc.IntegrityError:
            return False
        self._told(trial_id, state, values, change)
        return True

    @contextlib.contextmanager
    def telling(self, trial_id: int) -> Iterator[None]:
        """Within (around ``study.tell`` of ``trial_id``): the read of the told trial after its state change
        is answered from the read before it plus the change, not read again. Optuna's ``tell`` reads the
        trial, hands it to the sampler, changes its state, and reads it again to return it; a write to the
        trial through this storage in between (a sampler's system attribute) drops the answer."""
        self._memo.telling, self._memo.before = trial_id, None
        try:
            yield
        finally:
            self._memo.telling = self._memo.before = self._memo.trial = None

    def _told(self, trial_id: int, state: optuna.trial.TrialState, values: Any, change: dict[str, Any]) -> None:
        before, self._memo.before = getattr(self._memo, "before", None), None
        if before is None or before._trial_id != trial_id or getattr(self._memo, "telling", None) != trial_id:
            return
        before.state = state
        if values is not None:
            before.values = [float(v) for v in values]
        if "_datetime_start_utc" in change:
            before.datetime_start = _local(change["_datetime_start_utc"])
        if "_datetime_complete_utc" in change:
            before.datetime_complete = _local(change["_datetime_complete_utc"])
        self._memo.trial = before

    def _wrote(self, trial_id: int) -> None:
        """A write to ``trial_id``: what a memo holds of it is no longer the stored trial."""
        for name in ("before", "trial"):
            held = getattr(self._memo, name, None)
            if held is not None and held._trial_id == trial_id:
                setattr(self._memo, name, None)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._wrote(trial_id)
        super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._wrote(trial_id)
        super().set_trial_system_attr(trial_id, key, value)

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
            return super()._create_new_trial(study_id, template_trial)
        import random
        import time

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        attrs, beat = getattr(self._memo, "extra", None) or ({}, False)
        for attempt in range(1, 6):  # Optuna's MAX_RETRIES
            start = _utc_now()
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    db = session.connection()
                    if db.execute(_study_lock_statement(), {"id": study_id}).one_or_none() is None:
                        raise KeyError(models.NOT_FOUND_MSG)
                    row = db.execute(_new_trial_statement(), {
                        "study": study_id, "state": optuna.trial.TrialState.RUNNING, "start": start}).one()
                    if attrs:  # as set_trial_user_attr stores them
                        db.execute(_user_attr_insert(), [{"trial_id": row.trial_id, "key": k,
                                                          "value_json": json.dumps(v)} for k, v in attrs.items()])
                    if beat:
                        db.execute(_heartbeat_upsert(self.engine.name), {"trial_id": row.trial_id})
                created = optuna.trial.FrozenTrial(
                    number=row.number, state=optuna.trial.TrialState.RUNNING, value=None, values=None,
                    datetime_start=_local(start), datetime_complete=None, params={}, distributions={},
                    user_attrs=json.loads(json.dumps(attrs)), system_attrs={}, intermediate_values={},
                    trial_id=row.trial_id)
                if getattr(self._memo, "extra", None) is not None:  # Optuna's cache keeps `created`: a copy
                    self._memo.trial = copy.deepcopy(created)
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
                db.execute(_heartbeat_upsert(self.engine.name), {"trial_id": trial_id})
                db.commit()
        except sqlalchemy.exc.IntegrityError:
            pass
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

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        """The trial, in one statement (see :meth:`creating` and :meth:`telling` for the reads answered from
        what this thread has just stored)."""
        from optuna.storages._rdb import models

        held, self._memo.trial = getattr(self._memo, "trial", None), None
        if held is not None and held._trial_id == trial_id:
            return held
        _, trials = _by_trial(self._read(_trial_statement(), {"id": trial_id}))
        if not trials:
            raise KeyError(models.NOT_FOUND_MSG)
        if getattr(self._memo, "telling", None) == trial_id:
            self._memo.before = _frozen(trials[0])  # built twice: the caller may change its copy
        return _frozen(trials[0])

    def _get_trials(self, study_id: int, states: Container[optuna.trial.TrialState] | None,
                    included_trial_ids: set[int], trial_id_greater_than: int) -> list[optuna.trial.FrozenTrial]:
        import sqlalchemy.exc
        from optuna.storages._rdb import models

        included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)  # as Optuna narrows them
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
            rows = self._read(_trials_statement(states is not None, narrowing, self.engine.name), params)
        except sqlalchemy.exc.OperationalError:  # too many ids for IN: Optuna falls back the same way
            params.pop("ids", None)
            params.pop("above", None)
            rows = self._read(_trials_statement(states is not None, "", self.engine.name), params)
            keep = set(included)
            rows = [r for r in rows if r.kind == _STUDY or r.trial_id in keep or r.trial_id > trial_id_greater_than]
        study, trials = _by_trial(rows)
        if not study:
            raise KeyError(models.NOT_FOUND_MSG)  # as Optuna's StudyModel.find_or_raise_by_id
        return [_frozen(t) for t in trials]
