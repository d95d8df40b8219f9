"""Optuna's RDB storage with trials read in two queries instead of six or seven, and told in three.

``RDBStorage.get_trial`` loads the trial row, then its parameters, values, user attributes, system attributes
and intermediate values, one query each (SQLAlchemy lazy loads); ``_get_trials`` -- what every
``study.get_trials`` runs through Optuna's cache -- checks the study, loads the trial rows, then the same five
tables (select-in loads). A worker reads a trial about three times per trial (``ask``, twice in ``tell``) and
the study's new and running trials about twice (the worker loop's decision, ``ask``'s waiting trials): about
35 queries per trial, ~0.25 ms each on SQLite and a network round trip each on PostgreSQL.

:class:`LeanRDBStorage` answers both with the trial rows in one query and the rows of all five tables
in ONE ``UNION ALL`` query (per 500 trials), and builds each ``FrozenTrial`` exactly as
``RDBStorage._build_frozen_trial_from_trial_model`` does: parameters in the order they were stored, values by
objective, infinities and NaN restored from their stored kind, datetimes from naive UTC to naive local time.
``set_trial_state_values`` (``tell``, and ``ask`` popping a waiting trial) runs Optuna's steps -- lock the
trial row, refuse a finished trial, store the values, refuse to start a trial that is not waiting, set the
state and its datetime -- as three statements (lock, one upsert of all values, one update) instead of the
ORM's four to six. Everything else -- the other writes, the schema, heartbeats, pickling for Ray -- is
Optuna's own ``RDBStorage``. Tests compare its trials and its state changes with Optuna's on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Container, Iterable
from typing import Any

import optuna

__all__ = ["LeanRDBStorage"]

_CHUNK = 500  # trials per children query (SQLAlchemy's select-in loads use the same)
_PARAM, _VALUE, _USER, _SYSTEM, _STEP = range(5)


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """What ``TrialModel.datetime_start``/``datetime_complete`` return: naive UTC as naive local time."""
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


def _trial_columns():
    from optuna.storages._rdb import models

    t = models.TrialModel
    return (t.trial_id, t.number, t.state, t._datetime_start_utc, t._datetime_complete_utc)


_STATEMENTS: dict[str, Any] = {}


def _statement(name: str):
    """The statements, built once (building the union costs ~0.4 ms, more than running it on SQLite); the
    trial ids are an expanding bound parameter."""
    if "trial" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t = models.TrialModel
        _STATEMENTS["children"] = _children_query(sa.bindparam("ids", expanding=True))
        _STATEMENTS["trial"] = sa.select(*_trial_columns()).where(t.trial_id == sa.bindparam("id"))
        # "FOR UPDATE" locks the row on PostgreSQL; SQLite ignores it (its writes are serialised anyway)
        _STATEMENTS["lock"] = sa.select(t.state).where(t.trial_id == sa.bindparam("id")).with_for_update()
        study = models.StudyModel
        _STATEMENTS["study"] = sa.select(study.study_id).where(study.study_id == sa.bindparam("id"))
    return _STATEMENTS[name]


def _value_upsert(dialect: str):
    """Insert a trial's objective values, replacing those it has (Optuna's find-then-insert-or-update)."""
    key = f"values-{dialect}"
    if key not in _STATEMENTS:
        from optuna.storages._rdb import models

        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        table = models.TrialValueModel
        stmt = insert(table)
        _STATEMENTS[key] = stmt.on_conflict_do_update(
            index_elements=[table.trial_id, table.objective],
            set_={"value": stmt.excluded.value, "value_type": stmt.excluded.value_type})
    return _STATEMENTS[key]


def _utc_now() -> datetime.datetime:
    """What Optuna stores for ``datetime.now()``: the time as naive UTC."""
    return datetime.datetime.now().astimezone(datetime.timezone.utc).replace(tzinfo=None)


def _children_query(trial_ids: Any):
    """The five child tables' rows of ``trial_ids`` as one ``UNION ALL``: (kind, trial_id, order, int, name,
    float, text, type); each column typed the same in every branch (enums as their stored names)."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    def branch(kind, table, order, integer=None, name=None, number=None, text=None, kind_name=None):
        return sa.select(
            sa.literal(kind, sa.Integer).label("kind"), table.trial_id.label("trial_id"), order.label("ord"),
            (integer if integer is not None else sa.cast(sa.null(), sa.Integer)).label("i"),
            (sa.cast(name, sa.String) if name is not None else sa.cast(sa.null(), sa.String)).label("name"),
            (number if number is not None else sa.cast(sa.null(), sa.Float(precision=53))).label("f"),
            (sa.cast(text, sa.Text) if text is not None else sa.cast(sa.null(), sa.Text)).label("text"),
            (sa.cast(kind_name, sa.String) if kind_name is not None else sa.cast(sa.null(), sa.String)).label("k"),
        ).where(table.trial_id.in_(trial_ids))

    p, v, u = models.TrialParamModel, models.TrialValueModel, models.TrialUserAttributeModel
    s, iv = models.TrialSystemAttributeModel, models.TrialIntermediateValueModel
    return sa.union_all(
        branch(_PARAM, p, p.param_id, name=p.param_name, number=p.param_value, text=p.distribution_json),
        branch(_VALUE, v, v.trial_value_id, integer=v.objective, number=v.value, kind_name=v.value_type),
        branch(_USER, u, u.trial_user_attribute_id, name=u.key, text=u.value_json),
        branch(_SYSTEM, s, s.trial_system_attribute_id, name=s.key, text=s.value_json),
        branch(_STEP, iv, iv.trial_intermediate_value_id, integer=iv.step, number=iv.intermediate_value,
               kind_name=iv.intermediate_value_type),
    )


def _read_children(session: Any, trial_ids: list[int]) -> dict[int, list[Any]]:
    rows: dict[int, list[Any]] = {i: [] for i in trial_ids}
    for start in range(0, len(trial_ids), _CHUNK):
        for row in session.connection().execute(_statement("children"), {"ids": trial_ids[start:start + _CHUNK]}):
            rows[row.trial_id].append(row)
    return rows


def _frozen(trial: Any, children: list[Any]) -> optuna.trial.FrozenTrial:
    """``RDBStorage._build_frozen_trial_from_trial_model`` from a trial row and its child rows."""
    from optuna import distributions
    from optuna.storages._rdb import models

    value_kind = models.TrialValueModel.TrialValueType
    step_kind = models.TrialIntermediateValueModel.TrialIntermediateValueType
    children = sorted(children, key=lambda r: (r.kind, r.ord))
    objectives: dict[int, float] = {}
    params, dists, user, system, steps = {}, {}, {}, {}, {}
    for r in children:
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
        number=trial.number, state=trial.state, value=None, values=values,
        datetime_start=_local(trial.datetime_start), datetime_complete=_local(trial.datetime_complete),
        params=params, distributions=dists, user_attrs=user, system_attrs=system, intermediate_values=steps,
        trial_id=trial.trial_id)


class LeanRDBStorage(optuna.storages.RDBStorage):
    """``optuna.storages.RDBStorage`` whose trial reads take two queries and state changes three (see the
    module docstring)."""

    def set_trial_state_values(self, trial_id: int, state: optuna.trial.TrialState,
                               values: Any = None) -> bool:
        import sqlalchemy.exc
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        s = optuna.trial.TrialState
        try:
            with _create_scoped_session(self.scoped_session) as session:
                db = session.connection()
                row = db.execute(_statement("lock"), {"id": trial_id}).one_or_none()
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
        return True

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            row = session.connection().execute(_statement("trial"), {"id": trial_id}).one_or_none()
            if row is None:
                raise KeyError(models.NOT_FOUND_MSG)
            return _frozen(_row(row), _read_children(session, [trial_id])[trial_id])

    def _get_trials(self, study_id: int, states: Container[optuna.trial.TrialState] | None,
                    included_trial_ids: set[int], trial_id_greater_than: int) -> list[optuna.trial.FrozenTrial]:
        import sqlalchemy as sa
        import sqlalchemy.exc
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        t = models.TrialModel
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}  # as Optuna narrows them
        with _create_scoped_session(self.scoped_session) as session:
            db = session.connection()
            if db.execute(_statement("study"), {"id": study_id}).one_or_none() is None:
                raise KeyError(models.NOT_FOUND_MSG)  # as Optuna's StudyModel.find_or_raise_by_id
            query = sa.select(*_trial_columns()).where(t.study_id == study_id)
            if states is not None:
                assert isinstance(states, Iterable)
                query = query.where(t.state.in_(states))
            if included and trial_id_greater_than > -1:
                narrowed = query.where(sa.or_(t.trial_id.in_(included), t.trial_id > trial_id_greater_than))
            elif trial_id_greater_than > -1:
                narrowed = query.where(t.trial_id > trial_id_greater_than)
            else:
                narrowed = query
            try:
                rows = [_row(r) for r in db.execute(narrowed.order_by(t.trial_id))]
            except sqlalchemy.exc.OperationalError:  # too many ids for IN: Optuna falls back the same way
                rows = [_row(r) for r in db.execute(query.order_by(t.trial_id))
                        if r.trial_id in included or r.trial_id > trial_id_greater_than]
            children = _read_children(session, [r.trial_id for r in rows]) if rows else {}
            return [_frozen(r, children[r.trial_id]) for r in rows]


class _Trial:
    """A trial row with the ORM model's attribute names."""

    __slots__ = ("trial_id", "number", "state", "datetime_start", "datetime_complete")

    def __init__(self, trial_id, number, state, start, complete) -> None:
        self.trial_id, self.number, self.state = trial_id, number, state
        self.datetime_start, self.datetime_complete = start, complete


def _row(r: Any) -> _Trial:
    return _Trial(*r)
