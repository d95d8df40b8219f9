"""Grouped writes: several user attributes in one write, a trial's parameters in one write, and intermediate
values written together, stored exactly as Optuna's ``set_user_attr`` / ``report`` store them, on SQLite, PostgreSQL, a journal file and in
memory; refused on a finished trial; visible on the live trial at once."""

from __future__ import annotations

import optuna
import pytest

from autokd.search import batched_writes
from autokd.search.backends.storage import make_storage
from autokd.search.batched_writes import IntermediateValues, grouped_writes, set_user_attrs

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")

ATTRS = {"recipe": '{"student":{"name":"cnn"}}', "seed": 3, "val_acc": 0.9125, "params": 1234,
         "val_acc_seeds": [0.9, 0.925], "diverged": True, "student": "cnn(width=3)", "nothing": None}


def _storages(tmp_path, request):
    kind = request.param
    if kind == "sqlite":
        return make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    if kind == "journal":
        return make_storage(f"journal:///{tmp_path / 'a.log'}")
    if kind == "postgresql":
        return make_storage(request.getfixturevalue("postgres_url"))
    return optuna.storages.InMemoryStorage()


@pytest.fixture(params=["sqlite", "postgresql", "journal", "memory"])
def storage(tmp_path, request):
    return _storages(tmp_path, request)


def _count_commits(storage):
    """The writes the storage sees: commits of an RDB engine, appends to a journal (``None`` for others)."""
    if isinstance(storage, optuna.storages.JournalStorage):
        seen = {"n": 0}
        append = storage._backend.append_logs

        def counted(logs):
            seen["n"] += 1
            return append(logs)

        storage._backend.append_logs = counted
        return seen
    from sqlalchemy import event

    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return None
    seen = {"n": 0}

    @event.listens_for(engine, "commit")
    def _on_commit(_conn):
        seen["n"] += 1

    return seen


def test_batch_stores_what_set_user_attr_stores(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    one, batch = study.ask(), study.ask()
    for k, v in ATTRS.items():
        one.set_user_attr(k, v)
    commits = _count_commits(storage)
    set_user_attrs(batch, ATTRS)
    if commits is not None:  # an RDB storage or a journal: one transaction (one append) for all eight keys
        assert commits["n"] == 1
    assert batch.user_attrs == ATTRS  # the live trial sees them at once, as after set_user_attr
    set_user_attrs(batch, {"val_acc": 0.5, "epochs": 7})  # an existing key is overwritten, a new one added
    study.tell(one, 1.0)
    study.tell(batch, 1.0)
    fresh = optuna.load_study(study_name="s", storage=storage)
    stored_one, stored_batch = (t.user_attrs for t in fresh.get_trials())
    assert stored_one == ATTRS
    assert stored_batch == {**ATTRS, "val_acc": 0.5, "epochs": 7}


def test_finished_trial_refuses_a_batch(storage):
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, {"a": 1, "b": 2})
    assert study.get_trials()[0].user_attrs == {}


class _Mapping(dict):
    def set_user_attr(self, key, value):
        self[key] = value


def test_anything_with_set_user_attr_is_written_key_by_key():
    m = _Mapping()
    set_user_attrs(m, ATTRS)
    assert dict(m) == ATTRS
    set_user_attrs(m, {})
    assert dict(m) == ATTRS


CURVE = [0.5, 0.625, float("nan"), float("inf"), float("-inf"), 0.75]


def test_intermediate_values_store_what_report_stores(storage):
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    one, grouped = study.ask(), study.ask()
    for step, v in enumerate(CURVE):
        one.report(v, step)
    values = IntermediateValues(grouped, interval_s=3600.0)
    commits = _count_commits(storage)
    for step, v in enumerate(CURVE):
        values.report(v, step)
        assert grouped._cached_frozen_trial.intermediate_values[step] is not None  # seen by the pruner at once
    values.report(0.0, 1)  # a step reported twice is ignored, as Trial.report ignores it
    if commits is not None:
        assert commits["n"] == 0  # every value waits for the interval (counted from the start of training)
    values.flush()
    if commits is not None:
        assert commits["n"] == 1
    study.tell(one, 1.0)
    study.tell(grouped, 1.0)
    stored = [t.intermediate_values for t in optuna.load_study(study_name="s", storage=storage).get_trials()]
    assert stored[0].keys() == stored[1].keys() == set(range(len(CURVE)))
    for step, v in enumerate(CURVE):
        a, b = stored[0][step], stored[1][step]
        assert (a != a and b != b) or a == b == v  # NaN stays NaN, infinities stay infinite


def test_intermediate_values_are_written_once_the_interval_has_passed(tmp_path, monkeypatch):
    storage = make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    clock = [100.0]
    monkeypatch.setattr(batched_writes.time, "monotonic", lambda: clock[0])
    values = IntermediateValues(trial, interval_s=1.0)  # made when training starts, at 100 s
    values.report(0.5, 0)
    clock[0] = 100.9
    values.report(0.55, 1)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {}  # within the first second
    clock[0] = 101.0
    values.report(0.575, 2)  # a second after the start: the three values in one write
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {0: 0.5, 1: 0.55, 2: 0.575}
    clock[0] = 101.5
    values.report(0.6, 3)
    assert len(study._storage.get_trial(trial._trial_id).intermediate_values) == 3  # a second after that write
    clock[0] = 102.0
    values.report(0.625, 4)
    assert len(study._storage.get_trial(trial._trial_id).intermediate_values) == 5
    study.tell(trial, 1.0)
    values.interval_s = 3600.0
    values.report(0.65, 5)  # kept in the trial; writing to a finished trial is refused, as Optuna refuses it
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        values.flush()
    with pytest.raises(ValueError, match="non-negative"):
        IntermediateValues(study.ask()).report(0.5, -1)


def _suggest_all(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True), "width": trial.suggest_int("width", 1, 8),
            "loss": trial.suggest_categorical("loss", ["kd", "dkd", "mlkd"]),
            "t": trial.suggest_float("t", 1.0, 8.0, step=0.5)}


def _stored_params(study):
    return [(t.params, t.distributions) for t in study.get_trials()]


def test_a_group_stores_what_the_single_writes_store(storage):
    """Parameters, user attributes (one or several keys) and intermediate values written in one group are
    stored as Optuna's own calls store them, in one transaction, and the live trial holds them at once."""
    sampler = optuna.samplers.RandomSampler(seed=7)
    study = optuna.create_study(storage=storage, study_name="s", sampler=sampler)
    plain = study.ask()
    want = _suggest_all(plain)
    for k, v in ATTRS.items():
        plain.set_user_attr(k, v)
    plain.set_user_attr("one", 1)
    for step in range(3):
        plain.report(0.1 * step, step)
    study.sampler = optuna.samplers.RandomSampler(seed=7)  # the same draws again
    grouped = study.ask()
    values = IntermediateValues(grouped, interval_s=3600)
    commits = _count_commits(storage)
    with grouped_writes(grouped):
        got = _suggest_all(grouped)
        assert grouped.params == want  # the live trial holds every value at once
        set_user_attrs(grouped, ATTRS)
        grouped.set_user_attr("one", 1)
        with grouped_writes(grouped):  # a group inside a group is the same group
            for step in range(3):
                values.report(0.1 * step, step)
            values.flush()
        assert grouped.user_attrs == {**ATTRS, "one": 1}
    assert got == want
    if commits is not None:  # one transaction (one journal append) for all of it
        assert commits["n"] == 1
    assert grouped.suggest_int("width", 1, 8) == want["width"]  # suggested again: the stored value
    study.tell(plain, 1.0)
    study.tell(grouped, 1.0)
    fresh = optuna.load_study(study_name="s", storage=storage)
    a, b = fresh.get_trials()
    assert a.params == b.params == want and a.distributions == b.distributions
    assert a.user_attrs == b.user_attrs and a.intermediate_values == b.intermediate_values


def _url(tmp_path, request, kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}"
    if kind == "journal":
        return f"journal:///{tmp_path / 'a.log'}"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_a_group_refuses_an_incompatible_distribution(tmp_path, request, kind):
    """Optuna refuses a parameter whose distribution differs from the study's: at the call when this process
    knows the study's distribution, else (another process stored it meanwhile) on leaving, with nothing of
    the group written."""
    url = _url(tmp_path, request, kind)
    study = optuna.create_study(storage=make_storage(url), study_name="s")
    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    study.tell(first, 1.0)
    trial = study.ask()
    with grouped_writes(trial), pytest.raises(ValueError):
        trial.suggest_int("x", 0, 3)  # refused at the call, as without grouping
    trial = study.ask()
    with pytest.raises(ValueError), grouped_writes(trial):
        trial.suggest_float("z", 0.0, 1.0)
        trial.set_user_attr("a", 1)
        trial.suggest_float("y", 0.0, 1.0)
        other = optuna.load_study(study_name="s", storage=make_storage(url))  # another process
        theirs = other.ask()
        theirs.suggest_int("y", 0, 3)  # stored first: the study's distribution of "y" is theirs
        other.tell(theirs, 1.0)
    stored = optuna.load_study(study_name="s", storage=make_storage(url)).get_trials()
    assert stored[-2].params == {} and stored[-2].user_attrs == {}
    assert stored[-1].params == {"y": theirs.params["y"]}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_group_is_refused_by_a_finished_trial_and_written_when_an_error_leaves_it(tmp_path, request, kind):
    url = _url(tmp_path, request, kind)
    storage = make_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError), grouped_writes(trial):
        trial.suggest_float("x", 0.0, 1.0)
        optuna.load_study(study_name="s", storage=make_storage(url)).tell(
            trial.number, state=optuna.trial.TrialState.FAIL)  # e.g. failed as stale by another worker
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned), grouped_writes(trial):  # e.g. a pruned trial records its reason
        x = trial.suggest_float("x", 0.0, 1.0)
        set_user_attrs(trial, {"prune_reason": "invalid configuration", "epochs": 0})
        raise optuna.TrialPruned("invalid configuration")
    assert trial.storage is study._storage  # the trial writes directly again
    stored = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [t.params for t in stored] == [{}, {"x": x}]  # what Optuna would have stored before the exception
    assert stored[1].user_attrs == {"prune_reason": "invalid configuration", "epochs": 0}
