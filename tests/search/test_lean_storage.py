"""The study storage's lean reads (one statement per read) and state changes give exactly Optuna's trials and
results, on SQLite and PostgreSQL; the trial heartbeat records its first beat before the trial starts, then
one per interval."""

from __future__ import annotations

import math
import time

import optuna
import pytest

from autokd.search.backends.lean_storage import LeanRDBStorage
from autokd.search.backends.storage import make_storage
from autokd.search.backends.workers import heartbeat

pytestmark = [pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
S = optuna.trial.TrialState


@pytest.fixture(params=["sqlite", "postgresql"])
def url(tmp_path, request):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}"
    return request.getfixturevalue("postgres_url")


def _fill(study) -> None:
    """Trials of every kind: parameters of each distribution, attributes, NaN and infinite intermediate values,
    two objectives (one infinite), every state."""
    storage = study._storage
    for i in range(8):
        t = study.ask()
        t.suggest_float("lr", 1e-4, 1.0, log=True)
        t.suggest_int("width", 1, 9, step=2)
        t.suggest_categorical("loss", ["kd", None, 3, 0.5])
        if i % 2:
            t.suggest_float("t", 1.0, 8.0, step=0.5)
        t.set_user_attr("recipe", {"student": {"name": "cnn"}, "terms": [1, 2.5]})
        t.set_user_attr("none", None)
        storage.set_trial_system_attr(t._trial_id, "sys", [i, "x"])
        for step, v in enumerate([0.5, math.nan, math.inf, -math.inf, 0.25][: i % 6]):
            storage.set_trial_intermediate_value(t._trial_id, step, v)
        if i % 4 == 0:
            study.tell(t, [math.inf, -math.inf] if i == 4 else [0.1 * i, 2.0])
        elif i % 4 == 1:
            study.tell(t, state=S.FAIL)
        elif i % 4 == 2:
            study.tell(t, state=S.PRUNED)
    study.enqueue_trial({"lr": 0.01}, user_attrs={"baseline": "kd"})


def _same(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> None:
    assert (a.number, a.state, a.values, a._trial_id) == (b.number, b.state, b.values, b._trial_id)
    assert a.params == b.params and a.distributions == b.distributions
    assert list(a.params) == list(b.params)  # in the order they were stored
    assert a.user_attrs == b.user_attrs and a.system_attrs == b.system_attrs
    assert a.datetime_start == b.datetime_start and a.datetime_complete == b.datetime_complete
    assert a.intermediate_values.keys() == b.intermediate_values.keys()
    for step, v in a.intermediate_values.items():
        w = b.intermediate_values[step]
        assert (math.isnan(v) and math.isnan(w)) or v == w


def test_lean_reads_equal_optunas(url):
    lean = make_storage(url)
    assert isinstance(lean, LeanRDBStorage)
    plain = optuna.storages.RDBStorage(url)  # Optuna's own reads of the same database
    study = optuna.create_study(storage=lean, study_name=f"lean{time.monotonic_ns()}",
                                directions=["maximize", "minimize"])
    _fill(study)
    sid = study._study_id
    ours, theirs = lean._get_trials(sid, None, set(), -1), plain._get_trials(sid, None, set(), -1)
    assert len(ours) == len(theirs) == 9
    assert {t.state for t in ours} == {S.COMPLETE, S.FAIL, S.PRUNED, S.RUNNING, S.WAITING}
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)
        _same(lean.get_trial(b._trial_id), plain.get_trial(b._trial_id))
    ids = [t._trial_id for t in theirs]
    for states, included, greater in [((S.RUNNING,), {ids[1], ids[3]}, ids[4]), (None, set(), ids[5]),
                                      ((S.COMPLETE, S.WAITING), {ids[0], ids[8]}, ids[6]), (None, {ids[2]}, -1)]:
        ours = lean._get_trials(sid, states, included, greater)
        theirs = plain._get_trials(sid, states, included, greater)
        assert [t.number for t in ours] == [t.number for t in theirs]
        for a, b in zip(ours, theirs, strict=True):
            _same(a, b)
    with pytest.raises(KeyError):
        lean.get_trial(10**7)
    with pytest.raises(KeyError):
        lean._get_trials(10**7, None, set(), -1)
    # and through Optuna's cache, as a study reads it
    again = optuna.load_study(study_name=study.study_name, storage=make_storage(url))
    theirs = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
    for a, b in zip(again.get_trials(), theirs, strict=True):
        _same(a, b)


def test_a_read_is_one_statement(tmp_path):
    from sqlalchemy import event

    storage = make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    _fill(study)
    first = study.trials[0]._trial_id
    seen = []
    event.listen(storage.engine, "before_cursor_execute", lambda *a, **k: seen.append(1))
    storage.get_trial(first)
    assert len(seen) == 1  # the trial's row and its children in one union (Optuna: six, in a transaction)
    seen.clear()
    storage._get_trials(study._study_id, None, {first}, first + 3)
    assert len(seen) == 1  # the study, the trial rows, their children (Optuna: seven)


def test_too_many_listed_ids_fall_back_as_optuna_does(tmp_path, monkeypatch):
    """Optuna reads all the study's trials and keeps the listed or newer ones when the database refuses the
    id list (SQLite's limit on bound variables); so does the lean read."""
    import sqlalchemy.exc

    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = make_storage(url)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    _fill(study)
    ids = [t._trial_id for t in study.get_trials()]
    read = storage._read

    def refuse_lists(statement, params):
        if "ids" in params:
            raise sqlalchemy.exc.OperationalError("SELECT", params, Exception("too many SQL variables"))
        return read(statement, params)

    monkeypatch.setattr(storage, "_read", refuse_lists)
    ours = storage._get_trials(study._study_id, (S.RUNNING, S.WAITING), {ids[1], ids[3]}, ids[5])
    theirs = optuna.storages.RDBStorage(url)._get_trials(study._study_id, (S.RUNNING, S.WAITING),
                                                         {ids[1], ids[3]}, ids[5])
    assert [t.number for t in ours] == [t.number for t in theirs] and ours
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)


class _Beats:
    def __init__(self, interval):
        self.interval, self.beats = interval, []

    def get_heartbeat_interval(self):
        return self.interval

    def get_heartbeat_stale_trial_callback(self):
        return None

    def record_heartbeat(self, trial_id):
        self.beats.append((trial_id, time.monotonic()))


def test_the_first_heartbeat_is_recorded_before_the_trial_then_one_per_interval(monkeypatch):
    import optuna.storages._heartbeat as hb

    beats = _Beats(0.2)
    monkeypatch.setattr(hb, "is_heartbeat_enabled", lambda storage: storage is beats)
    study = type("S", (), {"_storage": beats})()
    with heartbeat(study, 7):
        assert len(beats.beats) == 1  # recorded before the block runs, by the caller
        start = beats.beats[0][1]
        time.sleep(0.5)
    n = len(beats.beats)
    assert n in (2, 3) and all(t == 7 for t, _ in beats.beats)  # at 0.2 s and 0.4 s
    assert beats.beats[1][1] - start >= 0.19
    time.sleep(0.3)
    assert len(beats.beats) == n  # stopped with the block
    silent = _Beats(0.2)  # a storage without heartbeats: nothing recorded, no thread
    plain = type("S", (), {"_storage": silent})()
    with heartbeat(plain, 1):
        time.sleep(0.3)
    assert silent.beats == []


def _state_row(storage, trial_id):
    t = storage.get_trial(trial_id)
    return t.state, t.values, t.datetime_start is not None, t.datetime_complete is not None


def test_state_changes_equal_optunas(url):
    """The same sequence of state changes on Optuna's storage and on the lean one: the same results, the same
    refusals, the same stored trials (datetimes within the second they were set)."""
    import datetime

    results = {}
    for kind in ("lean", "optuna"):
        storage = make_storage(url) if kind == "lean" else optuna.storages.RDBStorage(url)
        study = optuna.create_study(storage=storage, study_name=f"st{kind}{time.monotonic_ns()}",
                                    directions=["maximize", "minimize"])
        study.enqueue_trial({})
        study.enqueue_trial({})
        backend = storage
        ids = [t._trial_id for t in study.get_trials()]
        log = []
        before = datetime.datetime.now()
        log.append(backend.set_trial_state_values(ids[0], S.RUNNING))  # WAITING -> RUNNING: True
        log.append(backend.set_trial_state_values(ids[0], S.RUNNING))  # already running: False
        log.append(backend.set_trial_state_values(ids[0], S.COMPLETE, [0.5, math.inf]))
        log.append(backend.set_trial_state_values(ids[1], S.RUNNING))
        log.append(backend.set_trial_state_values(ids[1], S.PRUNED, [-math.inf, 2.0]))
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            backend.set_trial_state_values(ids[0], S.FAIL)
        with pytest.raises(KeyError):
            backend.set_trial_state_values(10**7, S.FAIL)
        trial = study.ask()  # a fresh trial, failed
        log.append(backend.set_trial_state_values(trial._trial_id, S.FAIL))
        rows = [_state_row(backend, i) for i in [*ids, trial._trial_id]]
        stamps = [(t.datetime_start, t.datetime_complete) for t in study.get_trials()]
        for start, complete in stamps:
            assert start is not None and start >= before.replace(microsecond=0) - datetime.timedelta(seconds=1)
            assert complete is not None and complete >= start
        results[kind] = (log, rows)
    assert results["lean"] == results["optuna"]
    assert results["lean"][0] == [True, False, True, True, True, True]


def test_new_trials_and_heartbeats_equal_optunas(url):
    """Trials created by the lean storage and by Optuna's, interleaved on one study, are numbered 0, 1, 2, ...
    in creation order; the cached new trial equals the stored one; a heartbeat is one row per trial, at the
    database's time, and a stopped one makes the trial stale for Optuna as before."""
    import datetime

    import sqlalchemy as sa
    from optuna.storages._rdb import models

    lean, plain = make_storage(url), optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=lean, study_name=f"new{time.monotonic_ns()}")
    sid = study._study_id
    made = []
    for k in range(6):
        frozen = (lean if k % 2 == 0 else plain)._create_new_trial(sid)
        made.append(frozen)
        _same(frozen, plain.get_trial(frozen._trial_id))
        assert frozen.state == S.RUNNING and frozen.datetime_start is not None
        assert abs(frozen.datetime_start - datetime.datetime.now()) < datetime.timedelta(seconds=5)
    assert [t.number for t in made] == list(range(6))
    with pytest.raises(KeyError):
        lean._create_new_trial(10**7)
    template = optuna.create_trial(params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                   value=1.0)
    from_template = lean._create_new_trial(sid, template)  # Optuna's own path
    assert from_template.number == 6 and plain.get_trial(from_template._trial_id).params == {"x": 0.5}

    for storage, trial in ((lean, made[0]), (plain, made[1])):
        storage.record_heartbeat(trial._trial_id)
        storage.record_heartbeat(trial._trial_id)
    with lean.engine.connect() as db:
        hb = models.TrialHeartbeatModel
        rows = db.execute(sa.select(hb.trial_id, hb.heartbeat).order_by(hb.trial_id)).all()
        db_now = db.execute(sa.select(sa.func.current_timestamp())).scalar_one()
    assert [r.trial_id for r in rows] == [made[0]._trial_id, made[1]._trial_id]
    for r in rows:
        assert abs(r.heartbeat.replace(tzinfo=None) - db_now.replace(tzinfo=None)) < datetime.timedelta(seconds=5)
    checker = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    time.sleep(2.2)
    stale = checker._get_stale_trial_ids(sid)
    assert made[0]._trial_id in stale and made[1]._trial_id in stale  # beats stopped: both stale alike


def test_a_trial_created_with_its_claim_and_beat_is_read_once_from_its_creation(url):
    """Within ``creating`` a new trial is stored with its user attributes and first heartbeat, and the first
    read of it is answered from its creation and equals Optuna's read of it; any later read, and any read
    outside, reads the database."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    lean, plain = make_storage(url), optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=lean, study_name=f"memo{time.monotonic_ns()}")
    sid = study._study_id
    reads = []
    read = lean._read
    lean._read = lambda *a: (reads.append(1), read(*a))[1]
    with lean.creating({"worker": "host:1", "tags": ("a", 1)}, heartbeat=True):
        made = lean._create_new_trial(sid)
        first = lean.get_trial(made._trial_id)
        assert reads == []
        _same(first, plain.get_trial(made._trial_id))
        assert first.user_attrs == made.user_attrs == {"worker": "host:1", "tags": ["a", 1]}  # as stored (JSON)
        assert first is not made  # Optuna's cache keeps `made`: the answer is a copy
        lean.set_trial_user_attr(made._trial_id, "k", 1)
        assert lean.get_trial(made._trial_id).user_attrs["k"] == 1 and reads == [1]  # read: the write shows
    outside = lean._create_new_trial(sid)
    lean.set_trial_user_attr(outside._trial_id, "k", 2)
    assert lean.get_trial(outside._trial_id).user_attrs == {"k": 2} and len(reads) == 2
    assert [lean._create_new_trial(sid).number for _ in range(2)] == [2, 3]
    with lean.engine.connect() as db:
        beats = db.execute(sa.select(models.TrialHeartbeatModel.trial_id)).scalars().all()
    assert beats == [made._trial_id]  # only the trial created with its beat


def test_a_heartbeat_of_a_removed_trial_is_ignored_and_a_failure_is_optunas_error(url, monkeypatch):
    """The heartbeat is one statement (on PostgreSQL outside a transaction); as Optuna's, it ignores a trial
    whose row is gone and raises ``StorageInternalError`` for a database error."""
    import sqlalchemy as sa
    import sqlalchemy.exc
    from optuna.storages._rdb import models

    lean = make_storage(url)
    study = optuna.create_study(storage=lean, study_name=f"hb{time.monotonic_ns()}")
    trial = study.ask()
    lean.record_heartbeat(10**7)  # no such trial: PostgreSQL's foreign key refuses it, ignored as by Optuna
    lean.record_heartbeat(trial._trial_id)
    with lean.engine.connect() as db:
        ids = db.execute(sa.select(models.TrialHeartbeatModel.trial_id)).scalars().all()
    assert trial._trial_id in ids

    def broken(*a, **k):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(lean, "_connection", broken)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        lean.record_heartbeat(trial._trial_id)


class _MarkingSampler(optuna.samplers.RandomSampler):
    """A sampler that writes to the trial while it is told (as NSGA-II stores constraints)."""

    def after_trial(self, study, trial, state, values):
        study._storage.set_trial_system_attr(trial._trial_id, "told_as", state.name)


@pytest.mark.parametrize("marking", [False, True])
def test_tell_returns_optunas_trial_read_once(url, marking):
    """Within ``telling``, ``study.tell`` returns the trial Optuna's own storage reads after the tell --
    complete (two objectives, one infinite), pruned (its last intermediate value as value) or failed --
    reading it once instead of twice; a write to the trial while it is told makes the second read real."""
    lean, plain = make_storage(url), optuna.storages.RDBStorage(url)
    sampler = _MarkingSampler(seed=0) if marking else optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(storage=lean, study_name=f"tell{time.monotonic_ns()}",
                                directions=["maximize", "minimize"], sampler=sampler)
    reads = []
    read = lean._read
    lean._read = lambda *a: (reads.append(1), read(*a))[1]
    for kind in ("complete", "pruned", "fail"):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("recipe", {"a": 1})
        for step, v in enumerate([0.5, 0.75]):
            lean.set_trial_intermediate_value(trial._trial_id, step, v)
        reads.clear()
        with lean.telling(trial._trial_id):
            if kind == "complete":
                told = study.tell(trial, [0.9, math.inf])
            elif kind == "pruned":
                told = study.tell(trial, state=S.PRUNED)
            else:
                told = study.tell(trial, state=S.FAIL)
        assert len(reads) == (2 if marking else 1)
        _same(told, plain.get_trial(trial._trial_id))
        assert told.state == {"complete": S.COMPLETE, "pruned": S.PRUNED, "fail": S.FAIL}[kind]
        assert told.system_attrs == ({"told_as": told.state.name} if marking else {})
        assert told.datetime_complete is not None and told.duration is not None
    first = study.trials[0]
    assert first.values == [0.9, math.inf]
    reads.clear()
    lean.get_trial(first._trial_id)  # outside: read
    assert reads == [1]


def _commits(storage) -> list[int]:
    from sqlalchemy import event

    n = [0]
    event.listen(storage.engine, "commit", lambda *a: n.__setitem__(0, n[0] + 1))
    return n


def test_a_trials_results_are_stored_with_its_state_change(url):
    """Inside ``telling``, the results a trial's last group leaves (``until_tell``) are shown by reads of the
    trial and stored in the transaction of its state change: the told trial is what Optuna's storage reads
    and equals a trial whose results were written on their own. Without a state change they are written
    when the scope ends; outside the scope, at the group's end."""
    from autokd.search.batched_writes import IntermediateValues, grouped_writes, set_user_attrs

    lean, plain = make_storage(url), optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=lean, study_name=f"defer{time.monotonic_ns()}")
    results = {"metrics": {"val_acc": 0.75, "nan": None}, "tags": ["a", 1]}
    curve = {0: 0.5, 1: math.nan, 2: 0.75}

    def last_writes(trial):
        values = IntermediateValues(trial, interval_s=3600.0)
        with grouped_writes(trial, until_tell=True):
            for step, v in curve.items():
                values.report(v, step)
            values.flush()
            set_user_attrs(trial, results)

    reference = study.ask()  # outside the scope: written at the group's end, then told
    last_writes(reference)
    assert plain.get_trial(reference._trial_id).user_attrs == results
    study.tell(reference, 0.75)

    trial = study.ask()
    commits = _commits(lean)
    statements = []
    from sqlalchemy import event

    event.listen(lean.engine, "before_cursor_execute", lambda *a, **k: statements.append(1))
    with lean.telling(trial._trial_id):
        last_writes(trial)
        assert commits[0] == 0 and plain.get_trial(trial._trial_id).user_attrs == {}  # not stored yet
        shown = lean.get_trial(trial._trial_id)
        assert shown.user_attrs == results and shown.intermediate_values.keys() == curve.keys()
        statements.clear()
        told = study.tell(trial, 0.75)
        if lean.engine.name == "postgresql":  # the read before the change, then ONE statement, no transaction
            assert commits[0] == 0 and len(statements) == 2
        else:  # the read, then one transaction: lock, attributes, values, objective values, state
            assert commits[0] == 1 and len(statements) == 6
    stored = plain.get_trial(trial._trial_id)
    _same(told, stored)
    assert stored.user_attrs == plain.get_trial(reference._trial_id).user_attrs == results
    ref_values = plain.get_trial(reference._trial_id).intermediate_values
    for step, v in curve.items():
        assert math.isnan(v) and math.isnan(stored.intermediate_values[step]) or stored.intermediate_values[step] == v
        assert math.isnan(v) or ref_values[step] == v

    untold = study.ask()  # no state change: written when the scope ends
    with lean.telling(untold._trial_id):
        last_writes(untold)
        assert plain.get_trial(untold._trial_id).user_attrs == {}
    assert plain.get_trial(untold._trial_id).user_attrs == results

    gone = study.ask()  # failed by another worker meanwhile: the write at the end is refused, as any write
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError), lean.telling(gone._trial_id):
        last_writes(gone)
        plain.set_trial_state_values(gone._trial_id, S.FAIL)
    assert plain.get_trial(gone._trial_id).user_attrs == {}


def _study_read_as_optunas(lean, plain, study) -> None:
    """Every read of the study through Optuna's cache, within the scope, equals Optuna's own read of it now
    (nobody else writes)."""
    ours = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    theirs = plain._get_trials(study._study_id, None, set(), -1)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)


def test_one_study_read_serves_the_scope_and_follows_its_own_writes(url):
    """Within ``one_study_read`` the study's trials are read once; the scope's new trial and its attribute
    writes join that read (every later read equals Optuna's read of the database then); any other write
    (a parameter, a state change, an enqueued trial) makes the next read read again; outside, every read
    reads."""
    lean, plain = make_storage(url), optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=lean, study_name=f"once{time.monotonic_ns()}", directions=["maximize",
                                                                                                   "minimize"])
    _fill(study)
    reads = []
    read = lean._read
    lean._read = lambda *a: (reads.append(1), read(*a))[1]
    with lean.one_study_read(study._study_id):
        study.get_trials(deepcopy=False)
        assert len(reads) == 1
        study.get_trials(deepcopy=False)
        assert len(reads) == 1  # answered from the first read
        with lean.creating({"worker": "w"}, heartbeat=False):
            trial = optuna.Trial(study, study._storage.create_new_trial(study._study_id))
        study._storage.set_trial_system_attr(trial._trial_id, "liar", [0.5, "x"])
        trial.set_user_attr("recipe", {"a": (1, 2)})
        _study_read_as_optunas(lean, plain, study)
        assert len(reads) == 1  # the creation, its claim and both attributes joined the read
        assert study.get_trials(deepcopy=False)[-1].system_attrs == {"liar": [0.5, "x"]}
        trial.suggest_float("lr", 1e-4, 1.0, log=True)  # a parameter: read again
        _study_read_as_optunas(lean, plain, study)
        assert len(reads) == 2
        study.get_trials(deepcopy=False)
        assert len(reads) == 2
        study.tell(trial, [1.0, 2.0])  # a state change (tell also reads the trial): read again
        n = len(reads)
        _study_read_as_optunas(lean, plain, study)
        assert len(reads) == n + 1
        study.enqueue_trial({"lr": 0.5})  # a trial from a template: read again
        n = len(reads)
        _study_read_as_optunas(lean, plain, study)
        assert len(reads) == n + 1 and study.get_trials(deepcopy=False)[-1].state == S.WAITING
    n = len(reads)
    study.get_trials(deepcopy=False)
    study.get_trials(deepcopy=False)
    assert len(reads) == n + 2  # outside the scope every read reads


def test_one_study_read_answers_only_what_its_read_covered(tmp_path):
    """A later read asking for trials the first read did not ask for (an older finished trial) reads the
    database; another study's reads are never answered from it."""
    lean = make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=lean, directions=["maximize", "minimize"])
    other = optuna.create_study(storage=lean)
    _fill(study)
    other.enqueue_trial({"x": 1})
    sid = study._study_id
    ids = [t._trial_id for t in lean._get_trials(sid, None, set(), -1)]
    reads = []
    read = lean._read
    lean._read = lambda *a: (reads.append(1), read(*a))[1]
    with lean.one_study_read(sid):
        tail = lean._get_trials(sid, None, set(), ids[3])
        assert [t._trial_id for t in tail] == ids[4:] and len(reads) == 1
        narrower = lean._get_trials(sid, None, {ids[5]}, ids[6])
        assert [t._trial_id for t in narrower] == [ids[5], *ids[7:]] and len(reads) == 1
        older = lean._get_trials(sid, None, {ids[1]}, ids[6])  # trial ids[1] was not asked for: read
        assert [t._trial_id for t in older] == [ids[1], *ids[7:]] and len(reads) == 2
        assert len(lean._get_trials(other._study_id, None, set(), -1)) == 1 and len(reads) == 3


def test_attribute_writes_equal_optunas(url):
    """User and system attributes written by the lean storage (two statements) and by Optuna's: the same stored
    rows (JSON as Optuna writes it: tuples as lists, None, nested, an overwrite), the same refusals (an unknown
    trial, a finished one), nothing stored by a refused write."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    stored = {}
    for kind in ("lean", "optuna"):
        storage = make_storage(url) if kind == "lean" else optuna.storages.RDBStorage(url)
        assert isinstance(storage, LeanRDBStorage) == (kind == "lean")
        study = optuna.create_study(storage=storage, study_name=f"attr{kind}{time.monotonic_ns()}")
        trial, done = study.ask(), study.ask()
        study.tell(done, 1.0)
        for key, value in [("a", 1), ("b", (1, "x", None)), ("c", {"n": [1.5, {"d": True}]}), ("a", "again")]:
            storage.set_trial_user_attr(trial._trial_id, key, value)
            storage.set_trial_system_attr(trial._trial_id, "s" + key, value)
        for write in (storage.set_trial_user_attr, storage.set_trial_system_attr):
            with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
                write(done._trial_id, "late", 1)
            with pytest.raises(KeyError):
                write(10**7, "k", 1)
        frozen = storage.get_trial(trial._trial_id)
        with storage.engine.connect() as db:
            rows = [sorted(db.execute(sa.select(m.key, m.value_json).where(m.trial_id.in_(
                [trial._trial_id, done._trial_id]))).all()) for m in (models.TrialUserAttributeModel,
                                                                     models.TrialSystemAttributeModel)]
        stored[kind] = (frozen.user_attrs, frozen.system_attrs, rows)
    assert stored["lean"] == stored["optuna"]
    assert stored["lean"][0] == {"a": "again", "b": [1, "x", None], "c": {"n": [1.5, {"d": True}]}}
