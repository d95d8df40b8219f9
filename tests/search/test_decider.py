"""The worker loop's decision: the study is tidied at most every few seconds while trials start, and always
right before a worker decides to wait or to stop (so a dead trial's retry or a failed baseline is never
missed)."""

from __future__ import annotations

from autokd.search.backends import optuna_backend as ob


def test_tidy_is_throttled_while_asking_and_fresh_before_waiting_or_stopping(monkeypatch):
    clock = [100.0]
    tidied: list[float] = []
    steps = iter(["ask", "ask", "wait", "ask", "stop", "stop", "stop"])
    monkeypatch.setattr(ob.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ob, "tidy", lambda study, cfg, space: tidied.append(clock[0]))
    monkeypatch.setattr(ob, "read_step", lambda study, trials: (next(steps), []))
    decide = ob.Decider(cfg=None, space=None, every_s=5.0)
    assert decide(None, 3) == "ask" and tidied == [100.0]  # the first decision tidies
    clock[0] = 101.0
    assert decide(None, 3) == "ask" and tidied == [100.0]  # within 5 s: no tidy
    clock[0] = 102.0
    # "wait" was decided on an old tidy: tidy now and decide again (the retry became waiting: "ask")
    assert decide(None, 3) == "ask" and tidied == [100.0, 102.0]
    clock[0] = 103.0
    assert decide(None, 3) == "stop" and tidied == [100.0, 102.0, 103.0]  # "stop" re-checked after a tidy
    clock[0] = 110.0
    assert decide(None, 3) == "stop" and tidied == [100.0, 102.0, 103.0, 110.0]  # due anyway: one tidy


def _counted(storage) -> list[int]:
    from sqlalchemy import event

    n = [0]
    event.listen(storage.engine, "before_cursor_execute", lambda *a, **k: n.__setitem__(0, n[0] + 1))
    return n


def test_ask_after_a_decision_makes_optunas_trial_claimed_in_fewer_statements(tmp_path, monkeypatch):
    """With no waiting trial in the decision's read, the asked trial is the one ``study.ask`` makes (next
    number, running, the sampler's draws), claimed by the worker and with its first heartbeat, in ONE
    transaction: no read for waiting trials, no re-read of the new trial, no separate claim or beat. With a
    trial waiting, it is popped as ``study.ask`` pops it, then claimed."""
    import optuna
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    from autokd.search import trial_record as tr
    from autokd.search.backends.storage import make_storage

    ours = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'a.db'}"),
                               sampler=optuna.samplers.RandomSampler(seed=0))
    plain = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", sampler=optuna.samplers.RandomSampler(seed=0))
    backend = ours._storage._backend
    decide = ob.Decider(cfg=None, space=None)
    monkeypatch.setattr(decide, "_tidy", lambda s: None)
    statements = _counted(backend)
    for k in range(3):
        assert decide(ours, 10) == "ask"
        before = statements[0]
        trial = decide.ask(ours, f"host:{k}")
        asked = statements[0] - before
        reference = plain.ask()
        a, b = ours._storage.get_trial(trial._trial_id), plain._storage.get_trial(reference._trial_id)
        assert (trial.number, a.number, a.state, a.params) == (b.number, b.number, b.state, b.params) == (
            k, k, optuna.trial.TrialState.RUNNING, {})
        assert tr.worker_of(a) == tr.worker_of(trial) == ("host", k) and decide.beaten == trial._trial_id
        assert trial.suggest_float("x", 0, 1) == reference.suggest_float("x", 0, 1)  # same sampler draws
        ours.tell(trial, 1.0)
        plain.tell(reference, 1.0)
        assert asked == 4  # lock the study, insert the trial, its claim, its heartbeat
    with backend.engine.connect() as db:
        beats = db.execute(sa.select(models.TrialHeartbeatModel.trial_id)).scalars().all()
    assert sorted(beats) == [t._trial_id for t in ours.trials]
    ours.enqueue_trial({"x": 0.25})
    assert decide(ours, 10) == "ask"
    popped = decide.ask(ours, "host:9")
    assert popped.number == 3 and popped.suggest_float("x", 0, 1) == 0.25 and decide.beaten is None
    frozen = ours._storage.get_trial(popped._trial_id)
    assert frozen.state == optuna.trial.TrialState.RUNNING and tr.worker_of(frozen) == ("host", 9)


def test_ask_on_other_storages_claims_the_trial(tmp_path):
    """A journal file (no lean storage, no heartbeat): Optuna's trial, then the claim."""
    import optuna

    from autokd.search import trial_record as tr
    from autokd.search.backends.storage import make_storage

    study = optuna.create_study(storage=make_storage(f"journal:///{tmp_path / 'j.log'}"))
    decide = ob.Decider(cfg=None, space=None)
    decide.seen = []
    trial = decide.ask(study, "host:1")
    assert trial.number == 0 and decide.beaten is None
    assert tr.worker_of(study._storage.get_trial(trial._trial_id)) == ("host", 1)


def test_next_trial_decides_asks_and_primes_under_the_lock_reading_the_study_once(tmp_path, monkeypatch):
    """``next_trial``: under the study lock, the decision, the ask and the pruner's priming, with ONE read of
    the study: the new trial's sampler reads it at ``before_trial`` (as MCTS does) and gets that read plus the
    new trial, claimed -- exactly what the database holds then. At the limit it stops without asking."""
    import contextlib

    import optuna

    from autokd.search import trial_record as tr
    from autokd.search.backends.storage import make_storage

    held = []

    @contextlib.contextmanager
    def lock(cfg):
        held.append("locked")
        yield
        held.append("unlocked")

    class ReadingSampler(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            self.seen = [(t.number, t.state, dict(t.user_attrs)) for t in study.get_trials(deepcopy=False)]
            self.locked = bool(held) and held[-1] == "locked"

    class PrimedPruner(optuna.pruners.NopPruner):
        def prime(self, study, number, trials):
            self.primed = (number, len(trials))

    monkeypatch.setattr(ob, "study_lock", lock)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(storage=make_storage(url), sampler=ReadingSampler(seed=0), pruner=PrimedPruner())
    for _ in range(2):
        study.tell(study.ask(), 0.5)
    backend = study._storage._backend
    reads = []
    read = backend._read
    monkeypatch.setattr(backend, "_read", lambda *a: (reads.append(1), read(*a))[1])
    decide = ob.Decider(cfg=None, space=None)
    monkeypatch.setattr(decide, "_tidy", lambda s: None)
    step, trial = decide.next_trial(study, 3, "host:7")
    assert step == "ask" and trial.number == 2 and held == ["locked", "unlocked"] and study.sampler.locked
    assert len(reads) == 1  # the decision's read; the sampler's read at the new trial was answered from it
    database = optuna.storages.RDBStorage(url).get_all_trials(study._study_id)
    assert study.sampler.seen == [(t.number, t.state, t.user_attrs) for t in database]
    assert study.sampler.seen[-1] == (2, optuna.trial.TrialState.RUNNING, tr.worker_attrs("host:7"))
    assert study.pruner.primed == (2, 2)
    study.tell(trial, 0.75)
    assert decide.next_trial(study, 3, "host:7") == ("stop", None) and held[-1] == "unlocked"
