"""Several worker processes on one study: exactly the requested trials, baselines once, nothing run twice,
the teacher trained once; a killed worker's trial is failed and retried. On SQLite, a journal file and a
real PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from worker_processes import ROOT, start_worker

from autokd.config import StudyConfig
from autokd.search import trial_record as tr
from autokd.search.backends.storage import load_study
from autokd.search.backends.workers import run_seed

SPACE = ROOT / "search_spaces" / "digits.yaml"


def _study(tmp: Path, name: str, storage: str | None, trials: int, *, epochs: int = 1,
           heartbeat: str = "") -> Path:
    path = tmp / f"{name}.yaml"
    storage_line = f"storage: {storage}, " if storage else ""
    path.write_text(f"""
name: {name}
device: cpu
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {SPACE}
search: {{{storage_line}sampler: tpe, pruner: none, trials: {trials}, epochs: {epochs}{heartbeat}}}
""")
    return path


def _run_workers(path: Path, n: int, tmp: Path, *, named: bool = True) -> list[str]:
    logs = [tmp / f"worker{k}.log" for k in range(n)]
    procs = [start_worker(path, *(("--worker", str(k)) if named else ()), log=logs[k]) for k in range(n)]
    for p in procs:
        p.wait(timeout=600)
    out = [lg.read_text() for lg in logs]
    for p, text in zip(procs, out, strict=True):
        assert p.returncode == 0, text[-3000:]
    return out


def _check_study(study, trials: int, students: int) -> None:
    done = study.get_trials(deepcopy=False)
    assert not [t for t in done if t.state == optuna.trial.TrialState.RUNNING]
    searched = [t for t in done if not tr.is_baseline(t)
                and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(searched) == trials
    numbers = [t.number for t in done]
    assert len(numbers) == len(set(numbers))
    # no two searched trials trained the same configuration
    configs = [json.dumps(t.params, sort_keys=True) for t in searched]
    assert len(configs) == len(set(configs)), configs
    baselines = [(tr.baseline_of(t), tr.student_of(t)) for t in done
                 if tr.is_baseline(t) and t.state == optuna.trial.TrialState.COMPLETE]
    assert len(baselines) == 2 * students and len(set(baselines)) == len(baselines)


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_three_workers_share_one_study(kind, tmp_path, request):
    storage = {"sqlite": None, "journal": f"journal:///{tmp_path}/study.log",
               "postgresql": None}[kind]
    if kind == "postgresql":
        storage = request.getfixturevalue("postgres_url")
    path = _study(tmp_path, f"w3{kind}", storage, trials=6)
    logs = _run_workers(path, 3, tmp_path, named=kind != "journal")  # unnamed: seeded by their place in the register
    cfg = StudyConfig.load(path)
    study = load_study(cfg)
    _check_study(study, trials=6, students=2)
    runs = tr.runs_of(study)
    assert len(runs) == 3 and len({r["worker"] for r in runs}) == 3 and len({r["sampler_seed"] for r in runs}) == 3
    assert all(r["sampler_seed"] == run_seed(cfg.seed, r["name"], r["trials_stored"]) for r in runs)
    if kind == "journal":
        assert sorted(r["name"] for r in runs) == ["run 0", "run 1", "run 2"]
    # the teacher was trained by one worker; the others waited for it and reused it
    assert sum("teacher: training" in text for text in logs) == 1
    assert sum("teacher: reusing" in text for text in logs) == 2
    # report and export work from the shared storage
    from autokd.api import export_recipe, make_report

    assert make_report(cfg).stat().st_size > 10_000
    assert export_recipe(cfg).is_file()


def test_resume_never_replays_a_trial(tmp_path):
    path = _study(tmp_path, "resume", None, trials=3)
    for n in (3, 4, 5):
        p = start_worker(path, "--trials", str(n), log=tmp_path / f"run{n}.log")
        assert p.wait(timeout=600) == 0, (tmp_path / f"run{n}.log").read_text()[-2000:]
    study = load_study(StudyConfig.load(path))
    _check_study(study, trials=5, students=2)


def test_a_study_run_by_one_worker_is_reproducible(tmp_path):
    """The same study file run twice from scratch (no ``--worker``) draws the same trials: the sampler seed
    comes from the study seed, the run's place in the register and the trials stored, not from the process;
    a resume is registered as the next run and draws new trials."""
    from autokd.search.run import run_search

    params = []
    for copy in ("a", "b"):  # two processes (a seed from the process would differ)
        (tmp_path / copy).mkdir()
        path = _study(tmp_path / copy, "same", None, trials=3)
        p = start_worker(path, log=tmp_path / f"{copy}.log")
        assert p.wait(timeout=600) == 0, (tmp_path / f"{copy}.log").read_text()[-2000:]
        cfg = StudyConfig.load(path)
        study = load_study(cfg)
        params.append([t.params for t in study.trials if not tr.is_baseline(t)])
        assert [(r["name"], r["trials_stored"]) for r in tr.runs_of(study)] == [("run 0", 4)]  # the 4 baselines
    assert params[0] == params[1] and len(params[0]) == 3
    study = run_search(cfg, trials=4, log=lambda *a: None)  # a resume: the second run
    runs = tr.runs_of(study)
    assert [r["name"] for r in runs] == ["run 0", "run 1"] and runs[1]["trials_stored"] == 7
    assert runs[1]["sampler_seed"] == run_seed(cfg.seed, "run 1", 7) != runs[0]["sampler_seed"]


def test_run_seed_differs_per_worker_and_per_run():
    assert run_seed(0, "a", 3) == run_seed(0, "a", 3)
    assert len({run_seed(0, w, n) for w in ("a", "b", "c") for n in (0, 4, 8)}) == 9


def _wait_for_running(cfg: StudyConfig, searched: bool, timeout: float = 300) -> optuna.trial.FrozenTrial:
    start = time.time()
    while time.time() - start < timeout:
        try:
            study = load_study(cfg)
        except Exception:
            time.sleep(0.5)
            continue
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if tr.worker_of(t) and (tr.is_baseline(t) != searched) and tr.recipe_dict_of(t) is not None:  # training
                return t
        time.sleep(0.3)
    raise AssertionError("no trial started running")


def test_kill_9_then_rerun_fails_the_dead_trial_at_once_and_completes(tmp_path):
    path = _study(tmp_path, "killed", None, trials=3, epochs=40)
    cfg = StudyConfig.load(path)
    p = start_worker(path, log=tmp_path / "first.log")
    victim = _wait_for_running(cfg, searched=False)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.time()
    short = _study(tmp_path, "killed", None, trials=3, epochs=1)  # same study, shorter trials for the rerun
    p2 = start_worker(short, log=tmp_path / "second.log")
    assert p2.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-2000:]
    study = load_study(cfg)
    dead = study.trials[victim.number]
    assert dead.state == optuna.trial.TrialState.FAIL and "died" in tr.fail_reason_of(dead)
    _check_clean_retry(study, dead)
    assert time.time() - t0 < 300
    _check_study(study, trials=3, students=2)


def _check_clean_retry(study, dead) -> None:
    """The dead trial's retry ran to completion as what the dead one was enqueued as, and carries nothing of
    the failed run."""
    (retry,) = [t for t in study.trials if tr.retry_of(t) == dead.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == dead.number
    assert tr.baseline_of(retry) == tr.baseline_of(dead) and retry.params == dead.params
    assert tr.fail_reason_of(retry) is None and tr.worker_of(retry) != tr.worker_of(dead)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_retry_is_optunas_retry_with_a_clean_record(tmp_path):
    """``RetryTrial`` enqueues what Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues (parameters, distributions,
    ``failed_trial``, ``retry_history``, at most two retries), but of the user attributes only what the trial
    was enqueued as, plus ``retry_of``."""
    from autokd.search.backends.workers import RetryTrial

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    study.enqueue_trial({"x": 0.25}, user_attrs=tr.baseline_attrs(tr.Baseline.KD, None))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    tr.record_worker(trial, "host:1")
    tr.record_metrics(trial, {"val_acc": 0.5, "epochs": 3})
    tr.record_failed(trial, "worker host:1 died while running this trial")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    ours, theirs = optuna.create_study(), optuna.create_study()
    failed = study.trials[0]
    for _ in range(2):  # the first run's retry, the retry's retry
        RetryTrial()(ours, failed)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(theirs, failed)
        mine, ref = ours.trials[-1], theirs.trials[-1]
        assert (mine.params, mine.distributions, mine.system_attrs) == (ref.params, ref.distributions,
                                                                        ref.system_attrs)
        assert mine.user_attrs == {**tr.baseline_attrs(tr.Baseline.KD, None), "retry_of": failed.number}
        assert ref.user_attrs == failed.user_attrs  # Optuna's copies the failed run's record
        failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=mine.params,
                                           distributions=mine.distributions, user_attrs=failed.user_attrs,
                                           system_attrs=mine.system_attrs)
        failed.number = mine.number
    RetryTrial()(ours, failed)  # the second retry failed too: no third
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(theirs, failed)
    assert len(ours.trials) == len(theirs.trials) == 2


def test_a_killed_workers_trial_is_retried_by_another_after_the_heartbeat_grace(tmp_path):
    path = _study(tmp_path, "hb", None, trials=4, epochs=40, heartbeat=", heartbeat_interval: 1, heartbeat_grace: 4")
    cfg = StudyConfig.load(path)
    # worker a runs on "another machine": b cannot know its process died, only that its heartbeat stopped
    a = start_worker(path, "--worker", "a", log=tmp_path / "a.log", env={"AUTOKD_HOST": "elsewhere"})
    victim = _wait_for_running(cfg, searched=False)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    short = _study(tmp_path, "hb", None, trials=4, epochs=1, heartbeat=", heartbeat_interval: 1, heartbeat_grace: 4")
    time.sleep(5)  # past the grace period: the other worker fails it through the heartbeat
    b = start_worker(short, "--worker", "b", log=tmp_path / "b.log")
    assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-2000:]
    study = load_study(cfg)
    dead = study.trials[victim.number]
    assert dead.state == optuna.trial.TrialState.FAIL and tr.fail_reason_of(dead) is None  # failed by heartbeat
    _check_clean_retry(study, dead)
    _check_study(study, trials=4, students=2)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_fails_the_running_trial_with_one_line_and_the_shell_exit_code(tmp_path, sig, code):
    path = _study(tmp_path, "term", None, trials=3, epochs=40)
    cfg = StudyConfig.load(path)
    log = tmp_path / "term.log"
    p = start_worker(path, log=log)
    victim = _wait_for_running(cfg, searched=False)
    p.send_signal(sig)
    assert p.wait(timeout=120) == code
    text = log.read_text()
    assert "Traceback" not in text and f"stopped: interrupted by {sig.name}" in text
    t = load_study(cfg).trials[victim.number]
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted") == sig.name
    assert not load_study(cfg).get_trials(states=(optuna.trial.TrialState.RUNNING,))


class _FinishesAfterRead(optuna.storages.InMemoryStorage):
    """Another worker's trial completes (outside the study lock, as a real ``tell`` does) right after the
    ``k``-th read of the study's trials."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.reads, self.pending = k, 0, None

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        out = super().get_all_trials(study_id, deepcopy, states)
        self.reads += 1
        if self.pending is not None and self.reads == self.k:
            self.set_trial_state_values(self.pending, optuna.trial.TrialState.COMPLETE, [0.5])
            self.pending = None
        return out


class _NoTraining:
    def fit(self, recipe, *, epochs=None, report=None, measure=True):
        return SimpleNamespace(metrics={"val_acc": 0.5, "epochs": 1, "params": 1, "train_time_s": 0.0},
                               history=[], stopped=False)


@pytest.mark.parametrize("k", range(1, 17))
def test_a_trial_finishing_during_the_decision_never_starts_an_extra_one(tmp_path, k):
    """5 of 6 searched trials are done and another worker runs the 6th; whichever read of the study it
    completes after, this worker starts nothing: the decision counts finished and running trials in one read
    (a trial finishing between a read of the finished ones and a read of the running ones made a 7th)."""
    from autokd.search.backends.optuna_backend import make_sampler, run_optuna
    from autokd.search.run import open_space

    cfg = StudyConfig.load(_study(tmp_path, "race", "memory", trials=6, heartbeat=", baselines: false"))
    space = open_space(cfg)
    storage = _FinishesAfterRead(k)
    study = optuna.create_study(storage=storage, sampler=make_sampler(cfg, space), direction="maximize")
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={tr.Key.WORKER.value: "elsewhere:1"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                              user_attrs={tr.Key.WORKER.value: "elsewhere:2"}))
    storage.pending = study.trials[-1]._trial_id
    storage.reads = 0
    ctx = SimpleNamespace(cfg=cfg, trial_trainer=_NoTraining)
    ran = run_optuna(ctx, space, study, trials=6, timeout=60, epochs=1, multi_objective=False, poll=0.0)
    assert storage.pending is None  # the other worker's trial did complete during the run
    assert ran == 0
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6


def _failed_by_another_worker(trial) -> None:
    """What another worker's clean-up does to a trial whose heartbeat stopped past the grace period."""
    trial.study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _reports_after(trial):
    _failed_by_another_worker(trial)
    trial.report(0.5, 0)  # the trial is finished: the storage refuses (a RuntimeError)
    return 0.5


def _returns_after(trial):
    _failed_by_another_worker(trial)
    return 0.5


class _FailsDuringTell(optuna.storages.InMemoryStorage):
    """The other worker fails the trial between tell's check that it runs and tell's update."""

    def set_trial_state_values(self, trial_id, state, values=None):
        if state.is_finished() and self.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            super().set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        return super().set_trial_state_values(trial_id, state, values)


@pytest.mark.parametrize("objective, storage", [(_reports_after, optuna.storages.InMemoryStorage),
                                                (_returns_after, optuna.storages.InMemoryStorage),
                                                (lambda t: 0.5, _FailsDuringTell)],
                         ids=["reports-after", "returns-after", "during-tell"])
def test_a_worker_whose_trial_was_failed_as_stale_goes_on(objective, storage):
    """A suspended worker resumes after another one failed its trial (heartbeat past the grace period) and
    enqueued the retry: the trial stays failed and the worker goes on instead of crashing on ``tell``."""
    from autokd.search.backends.optuna_backend import run_one_trial

    study = optuna.create_study(storage=storage(), direction="maximize")
    trial = study.ask()
    frozen = run_one_trial(study, trial, objective)
    assert frozen.state == optuna.trial.TrialState.FAIL and frozen.value is None
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_a_stale_trials_deferred_results_are_refused_and_the_worker_goes_on(tmp_path):
    """On a lean storage the results of a trial's last group wait for its state change; when another worker
    failed the trial meanwhile, tell skips it, the results' own write is refused, and the worker goes on."""
    from autokd.search.backends.optuna_backend import run_one_trial
    from autokd.search.backends.storage import make_storage
    from autokd.search.batched_writes import grouped_writes, set_user_attrs

    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(storage=make_storage(url), direction="maximize")
    other = optuna.storages.RDBStorage(url)  # another worker's process

    def objective(trial):
        with grouped_writes(trial, until_tell=True):
            set_user_attrs(trial, {"metrics": {"val_acc": 0.5}})
        other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return 0.5

    frozen = run_one_trial(study, study.ask(), objective)
    assert frozen.state == optuna.trial.TrialState.FAIL and frozen.value is None
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and "metrics" not in study.trials[0].user_attrs
    ok = run_one_trial(study, study.ask(), lambda t: 0.75)
    assert ok.state == optuna.trial.TrialState.COMPLETE and ok.value == 0.75
