"""The SQL of :class:`~.lean_storage.LeanRDBStorage` -- each statement built once per shape (building one costs
more than running it on SQLite) -- and the decoding of its read's rows into ``FrozenTrial`` exactly as
Optuna's ``RDBStorage._build_frozen_trial_from_trial_model`` builds them."""

from __future__ import annotations

import datetime
import json
from typing import Any

import optuna

STUDY, TRIAL, PARAM, VALUE, USER, SYSTEM, STEP = range(-2, 5)
_STATEMENTS: dict[Any, Any] = {}


def local_time(utc: datetime.datetime | None) -> datetime.datetime | None:
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
            sa.literal(STUDY, sa.Integer).label("kind"), null(sa.Integer).label("trial_id"),
            st.study_id.label("ord"), null(sa.Integer).label("i"), null(sa.String).label("name"),
            null(float_t).label("f"), null(sa.Text).label("text"), null(sa.String).label("k"),
            null(sa.DateTime).label("d1"), null(sa.DateTime).label("d2"),
        ).where(st.study_id == sa.bindparam("study")))
    branches += [
        branch(TRIAL, t, t.trial_id, integer=t.number, kind_name=t.state, start=t._datetime_start_utc,
               complete=t._datetime_complete_utc),
        branch(PARAM, p, p.param_id, name=p.param_name, number=p.param_value, text=p.distribution_json),
        branch(VALUE, v, v.trial_value_id, integer=v.objective, number=v.value, kind_name=v.value_type),
        branch(USER, u, u.trial_user_attribute_id, name=u.key, text=u.value_json),
        branch(SYSTEM, sy, sy.trial_system_attribute_id, name=sy.key, text=sy.value_json),
        branch(STEP, iv, iv.trial_intermediate_value_id, integer=iv.step, number=iv.intermediate_value,
               kind_name=iv.intermediate_value_type),
    ]
    return sa.union_all(*branches)


def trials_statement(has_states: bool, narrowing: str, dialect: str):
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


def trial_statement():
    """The read of one trial (``get_trial``), built once."""
    if "trial" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        _STATEMENTS["trial"] = _read_statement(models.TrialModel.trial_id == sa.bindparam("id"), study=False)
    return _STATEMENTS["trial"]


def lock_statement():
    """The trial's state, its row locked ("FOR UPDATE" on PostgreSQL; SQLite serialises its writes anyway)."""
    if "lock" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t = models.TrialModel
        _STATEMENTS["lock"] = sa.select(t.state).where(t.trial_id == sa.bindparam("id")).with_for_update()
    return _STATEMENTS["lock"]


def value_upsert(dialect: str):
    """Insert a trial's objective values, replacing those it has (Optuna's find-then-insert-or-update)."""
    key = f"values-{dialect}"
    if key not in _STATEMENTS:
        from optuna.storages._rdb import models

        from ..trial_writers import upsert

        _STATEMENTS[key] = upsert(dialect, models.TrialValueModel, ("trial_id", "objective"),
                                  ("value", "value_type"))
    return _STATEMENTS[key]


def new_trial_statement():
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


def user_attr_insert():
    """A new trial's user attributes (rows given at execution)."""
    if "user-attrs" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        _STATEMENTS["user-attrs"] = sa.insert(models.TrialUserAttributeModel)
    return _STATEMENTS["user-attrs"]


def study_lock_statement():
    """The study's row, locked while a trial is created (its number counts the trials before it)."""
    if "study-lock" not in _STATEMENTS:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        study = models.StudyModel
        _STATEMENTS["study-lock"] = sa.select(study.study_id).where(
            study.study_id == sa.bindparam("id")).with_for_update()
    return _STATEMENTS["study-lock"]


def heartbeat_upsert(dialect: str):
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


def utc_now() -> datetime.datetime:
    """What Optuna stores for ``datetime.now()``: the time as naive UTC."""
    return datetime.datetime.now().astimezone(datetime.timezone.utc).replace(tzinfo=None)


def frozen_trial(rows: list[Any]) -> optuna.trial.FrozenTrial:
    """``RDBStorage._build_frozen_trial_from_trial_model`` from one trial's rows (its own row first)."""
    from optuna import distributions
    from optuna.storages._rdb import models

    value_kind = models.TrialValueModel.TrialValueType
    step_kind = models.TrialIntermediateValueModel.TrialIntermediateValueType
    trial = rows[0]
    objectives: dict[int, float] = {}
    params, dists, user, system, steps = {}, {}, {}, {}, {}
    for r in rows[1:]:
        if r.kind == PARAM:
            dist = distributions.json_to_distribution(r.text)
            params[r.name], dists[r.name] = dist.to_external_repr(r.f), dist
        elif r.kind == VALUE:
            objectives[r.i] = models.TrialValueModel.stored_repr_to_value(r.f, value_kind[r.k])
        elif r.kind == USER:
            user[r.name] = json.loads(r.text)
        elif r.kind == SYSTEM:
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
        datetime_start=local_time(trial.d1), datetime_complete=local_time(trial.d2), params=params, distributions=dists,
        user_attrs=user, system_attrs=system, intermediate_values=steps, trial_id=trial.trial_id)


def by_trial(rows: Any) -> tuple[bool, list[list[Any]]]:
    """(whether the study's row came, each trial's rows in trial id order, its own row first)."""
    study = False
    trials: dict[int, list[Any]] = {}
    for r in sorted(rows, key=lambda r: (r.kind, r.ord)):  # trial rows sort before their children
        if r.kind == STUDY:
            study = True
        elif r.kind == TRIAL:
            trials[r.trial_id] = [r]
        else:
            trials[r.trial_id].append(r)
    return study, [trials[i] for i in sorted(trials)]


def finish_statement(attrs: bool, values_by_step: bool, values: bool):
    """PostgreSQL: a trial's move to a finished state as ONE statement, so outside a transaction -- lock the
    trial's row, and only if it is not finished: upsert the given user attributes, intermediate values and
    objective values, set the state and its time -- returning the state it had (``None``: no such trial).
    The row lock re-reads the latest committed row, and every part works from that row. Built once per
    shape; the rows come as arrays (``unnest``), so the text does not change with their number."""
    key = ("finish", attrs, values_by_step, values)
    if key not in _STATEMENTS:
        import sqlalchemy as sa

        parts = ["cur AS (SELECT trial_id, state FROM trials WHERE trial_id = :id FOR UPDATE)",
                 "ok AS (SELECT trial_id FROM cur WHERE state NOT IN ('COMPLETE', 'PRUNED', 'FAIL'))"]
        if attrs:
            parts.append(
                "a AS (INSERT INTO trial_user_attributes (trial_id, key, value_json) SELECT ok.trial_id, x.k, x.j "
                "FROM ok, unnest(CAST(:attr_keys AS VARCHAR[]), CAST(:attr_json AS VARCHAR[])) AS x(k, j) "
                "ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json)")
        if values_by_step:
            parts.append(
                "iv AS (INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
                "intermediate_value_type) SELECT ok.trial_id, x.s, x.v, CAST(x.t AS trialintermediatevaluetype) "
                "FROM ok, unnest(CAST(:steps AS INTEGER[]), CAST(:step_values AS DOUBLE PRECISION[]), "
                "CAST(:step_kinds AS VARCHAR[])) AS x(s, v, t) ON CONFLICT (trial_id, step) DO UPDATE SET "
                "intermediate_value = excluded.intermediate_value, "
                "intermediate_value_type = excluded.intermediate_value_type)")
        if values:
            parts.append(
                "v AS (INSERT INTO trial_values (trial_id, objective, value, value_type) "
                "SELECT ok.trial_id, x.o, x.v, CAST(x.t AS trialvaluetype) FROM ok, unnest(CAST(:objectives AS "
                "INTEGER[]), CAST(:objective_values AS DOUBLE PRECISION[]), CAST(:objective_kinds AS VARCHAR[])) "
                "AS x(o, v, t) ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, "
                "value_type = excluded.value_type)")
        parts.append("u AS (UPDATE trials SET state = CAST(:state AS trialstate), datetime_complete = :complete "
                     "FROM ok WHERE trials.trial_id = ok.trial_id)")
        _STATEMENTS[key] = sa.text("WITH " + ", ".join(parts) + " SELECT CAST(state AS VARCHAR) AS state FROM cur")
    return _STATEMENTS[key]
