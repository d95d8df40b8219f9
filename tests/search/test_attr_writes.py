"""Several user attributes in one write: stored exactly as Optuna's ``set_user_attr`` stores them, on SQLite,
PostgreSQL, a journal file and in memory; refused on a finished trial; visible on the live trial."""

from __future__ import annotations

import optuna
import pytest

from autokd.search.attr_writes import set_user_attrs
from autokd.search.backends.storage import make_storage

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
    """Commits the RDB engine sees (``None`` when the storage has no engine)."""
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
    if commits is not None:  # an RDB storage: one transaction for all eight keys
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
