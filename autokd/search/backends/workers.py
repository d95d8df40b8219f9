"""Who runs a trial: worker identity, per-run sampler seeds, and recovery of trials whose process died.

Every trial records the worker that runs it (``host:pid``). A run that starts on a machine fails at once
the RUNNING trials of that machine whose process is gone (a ``kill -9``, a power cut), instead of waiting
for the heartbeat grace period, and enqueues them again (the retry keeps their parameters; a baseline is
re-enqueued by the baselines step). Trials of other machines are left to the heartbeat.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
from collections.abc import Iterator

from ...fingerprint import config_hash
from .. import trial_record as tr

__all__ = ["worker_id", "run_seed", "fail_dead_local_trials", "fail_unclaimed_trials", "pid_alive", "RetryTrial",
           "heartbeat"]

#: how many times a failed trial is retried (its first run, then at most this many retries)
MAX_RETRY = 2


def _host() -> str:
    """This machine's name in worker records (``AUTOKD_HOST`` overrides the host name)."""
    return os.environ.get("AUTOKD_HOST") or socket.gethostname()


def worker_id() -> str:
    """``host:pid`` of this process."""
    return f"{_host()}:{os.getpid()}"


def run_seed(study_seed: int, worker: str | int, n_trials: int) -> int:
    """The sampler seed of one run of one worker: derived from the study seed, the worker and the number of
    trials already in storage, so a resumed run or a second worker never replays another's draws, and the
    same (seed, worker, storage state) reproduces the same draws."""
    return int(config_hash({"seed": study_seed, "worker": str(worker), "trials": n_trials}), 16) % (2**31 - 1)


class RetryTrial:
    """Enqueue a failed trial again: Optuna's ``RetryHeartbeatStaleTrialCallback`` (same parameters and distributions;
    system attributes ``failed_trial`` -- the first failed run -- and ``retry_history``; at most ``max_retry``
    retries), except that the retry starts clean: its user attributes are what the trial was enqueued as plus
    ``retry_of`` (:func:`~..trial_record.retry_attrs`), not the failed run's worker, metrics and fail reason.
    Also the storage's heartbeat callback (a stale trial)."""

    def __init__(self, max_retry: int = MAX_RETRY) -> None:
        self.max_retry = max_retry

    def __call__(self, study, trial) -> None:
        import optuna

        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return
        system_attrs = {"failed_trial": trial.number, **trial.system_attrs, "retry_history": history}
        study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.WAITING, params=trial.params,
                                            distributions=trial.distributions, user_attrs=tr.retry_attrs(trial),
                                            system_attrs=system_attrs))


@contextlib.contextmanager
def heartbeat(study, trial_id: int, first: bool = True) -> Iterator[None]:
    """While the block runs, the trial's heartbeat is recorded every ``heartbeat_interval`` seconds, as by
    Optuna's ``HeartbeatThread`` -- except that the first beat is recorded here, before the block, instead of
    by the new thread while the block starts: on SQLite that first write would otherwise wait for (or make
    wait) the trial's own first writes, ~2 ms per trial. ``first=False``: the trial was created with its
    first beat a moment ago (``Decider.ask``). Storages without heartbeats: nothing."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    if not is_heartbeat_enabled(storage):
        yield
        return
    if first:
        storage.record_heartbeat(trial_id)
    stop = threading.Event()
    interval = storage.get_heartbeat_interval()

    def beat() -> None:
        while not stop.wait(timeout=interval):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_dead_local_trials(study) -> list[int]:
    """Fail the RUNNING trials that a dead process of this machine left behind and enqueue their retry (as
    the heartbeat does: same parameters and attributes, at most two retries). Returns the failed numbers."""
    import optuna

    host = _host()
    me = os.getpid()
    failed = []
    retry = RetryTrial()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        who = tr.worker_of(t)
        if who is None or who[0] != host or who[1] == me or pid_alive(who[1]):
            continue
        study._storage.set_trial_user_attr(t._trial_id, tr.Key.FAIL_REASON.value,
                                           f"worker {who[0]}:{who[1]} died while running this trial")
        if study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
            failed.append(t.number)
            retry(study, study._storage.get_trial(t._trial_id))
    return failed


def fail_unclaimed_trials(study, grace_s: float) -> list[int]:
    """Fail (and retry) the RUNNING trials that no worker claimed within ``grace_s`` seconds of their start: a
    process killed between asking for a trial and recording itself on it leaves one with no owner and no
    heartbeat, which neither :func:`fail_dead_local_trials` nor Optuna's heartbeat would ever fail."""
    import optuna

    now = datetime.datetime.now()
    failed = []
    retry = RetryTrial()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        start = t.datetime_start
        if tr.worker_of(t) is not None or start is None or (now - start).total_seconds() < grace_s:
            continue
        study._storage.set_trial_user_attr(t._trial_id, tr.Key.FAIL_REASON.value,
                                           f"no worker claimed it within {grace_s:g} s of its start")
        if study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
            failed.append(t.number)
            retry(study, study._storage.get_trial(t._trial_id))
    return failed
