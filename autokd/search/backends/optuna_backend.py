"""Optuna backend: trials run in this process; any number of processes (workers) may share one study.

The loop is Optuna's ask/tell with two differences that make workers safe:

- the decision to start a trial and its creation happen under the study lock (``storage.study_lock``), so
  the study ends with exactly the requested number of searched trials however many workers run;
- each run of each worker seeds its sampler from (study seed, worker, trials in storage), so a resume or a
  second worker never replays another's trials.

Baselines are enqueued once, under the same lock; enqueued trials are popped atomically by the storage.
"""

from __future__ import annotations

import contextlib
import gc
import time
import warnings
from typing import TYPE_CHECKING, Any

from ...errors import AutoKDError
from .. import trial_record as tr
from ..objective import Objective
from ..study_reads import backend_of, one_study_read
from .storage import study_lock
from .workers import fail_dead_local_trials, fail_unclaimed_trials, heartbeat, run_seed, worker_id

if TYPE_CHECKING:
    from ...context import StudyContext
    from ..space import SearchSpace

__all__ = ["run_optuna", "enqueue_baselines", "counted", "make_sampler", "make_pruner", "run_one_trial",
           "Interrupted", "start_run", "tidy", "waiting", "next_step", "Decider", "quiet", "collect_after_trial"]


#: a baseline that failed this many times (e.g. out of memory) is not enqueued again
MAX_BASELINE_ATTEMPTS = 3


class Interrupted(AutoKDError):
    """The search was stopped by a signal; the running trial was recorded as FAIL (rerun to resume)."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        self.signal_name, self.exit_code = signal_name, exit_code
        super().__init__(f"interrupted by {signal_name}; the running trial is recorded as failed and will be "
                         "retried: rerun the same command to resume (completed trials are kept)")


def make_sampler(cfg, space: SearchSpace | None = None, *, seed: int | None = None):
    """The study's sampler; tree samplers get the space's decision tree. ``seed`` defaults to the study seed
    (:func:`run_optuna` reseeds it per run and worker)."""
    from .. import samplers

    kw = dict(cfg.search.sampler_kwargs)
    if space is not None and samplers.SAMPLERS.meta(cfg.search.sampler).get("uses_space"):
        kw.setdefault("space", space)  # tree-walking samplers learn the declared decision tree
    if cfg.search.sampler == "evolution":
        kw.setdefault("population_size", max(4, min(16, cfg.search.trials // 3)))
    return samplers.create(cfg.search.sampler, seed=cfg.seed if seed is None else seed, **kw)


def make_pruner(cfg, epochs: int):
    from .. import pruners

    return pruners.create(cfg.search.pruner, epochs, **cfg.search.pruner_kwargs)


def enqueue_baselines(study, students=None) -> list[tuple[str, str | None]]:
    """Enqueue the CE-only and plain-KD trials (for each of ``students``, a list of ``StudentSpec``; default:
    the space's first student) that the study does not hold yet (resume; a failed one is enqueued again).
    Call it under the study lock when several workers may start together."""
    import optuna

    have, failed = set(), {}
    for t in study.get_trials(deepcopy=False):
        key = (tr.baseline_of(t), t.user_attrs.get(tr.Key.BASELINE_STUDENT_LABEL.value))
        if t.state == optuna.trial.TrialState.FAIL:
            failed[key] = failed.get(key, 0) + 1
        else:
            have.add(key)
    added = []
    for spec in students or [None]:
        label = spec.label() if spec is not None else None
        for kind in tr.Baseline:
            if (kind, label) not in have and failed.get((kind, label), 0) < MAX_BASELINE_ATTEMPTS:
                study.enqueue_trial({}, user_attrs=tr.baseline_attrs(kind, spec), skip_if_exists=False)
                added.append((kind.value, label))
    return added


@contextlib.contextmanager
def quiet():
    """Silence Optuna's "experimental" warnings on heartbeat helpers that have been stable for years."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def counted(study) -> int:
    """Finished searched trials (complete or pruned), baselines excluded."""
    import optuna

    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False, states=ok) if not tr.is_baseline(t))


def waiting(study) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def next_step(study, trials: int) -> str:
    """Under the study lock, what a worker does next: ``"ask"`` (a trial is waiting, or the finished plus
    running searched trials fall short of ``trials``), ``"stop"`` (enough finished and no baseline running)
    or ``"wait"`` (others run the last trials)."""
    return read_step(study, trials)[0]


def read_step(study, trials: int) -> tuple[str, list]:
    """:func:`next_step`, and the study's trials it was decided on.

    Every count comes from ONE read of the study: trials finish outside the lock, so finished trials counted
    in one read and running ones in a later read miss a trial that finished between the two, and the study
    would end with one searched trial too many."""
    import optuna

    s = optuna.trial.TrialState
    n_waiting = finished = running = running_baselines = 0
    seen = study.get_trials(deepcopy=False)
    for t in seen:
        if t.state == s.WAITING:
            n_waiting += 1
        elif t.state in (s.COMPLETE, s.PRUNED):
            finished += not tr.is_baseline(t)
        elif t.state == s.RUNNING:
            if tr.is_baseline(t):
                running_baselines += 1
            else:
                running += 1
    if n_waiting or finished + running < trials:
        return "ask", seen
    return ("stop" if finished >= trials and not running_baselines else "wait"), seen


def run_one_trial(study, trial, objective, first_beat: bool = True) -> Any:
    """Run ``objective(trial)`` with a heartbeat, tell the study the outcome, return the frozen trial.
    ``RuntimeError`` (e.g. out of memory) fails the trial and the search goes on; a KeyboardInterrupt or
    :class:`Interrupted` fails it and propagates; any other exception fails it and propagates. A trial that
    another worker failed meanwhile because its heartbeat stopped past the grace period (this process was
    suspended or starved) is left failed, and this worker goes on: the retry of that trial runs elsewhere."""
    import optuna

    state, values, error, frozen = None, None, None, None
    # a lean storage stores the trial's results with its state change and answers tell's re-read
    telling = getattr(backend_of(study._storage), "telling", None)
    # a trial another worker already failed as stale stays failed (its retry runs elsewhere), also when that
    # happens between tell's check and its update
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError), \
            telling(trial._trial_id) if telling is not None else contextlib.nullcontext():
        with heartbeat(study, trial._trial_id, first=first_beat):
            try:
                values = objective(trial)
                state = optuna.trial.TrialState.COMPLETE
            except optuna.TrialPruned:
                state = optuna.trial.TrialState.PRUNED
            except RuntimeError:
                state = optuna.trial.TrialState.FAIL
            except KeyboardInterrupt:
                state, error = optuna.trial.TrialState.FAIL, Interrupted("SIGINT", 130)
                tr.record_interrupted(trial, "SIGINT")
            except Interrupted as e:
                state, error = optuna.trial.TrialState.FAIL, e
                tr.record_interrupted(trial, e.signal_name)
            except Exception as e:  # recorded, then re-raised below
                state, error = optuna.trial.TrialState.FAIL, e
        if state == optuna.trial.TrialState.COMPLETE:
            frozen = study.tell(trial, values, skip_if_finished=True)
        else:
            frozen = study.tell(trial, state=state, skip_if_finished=True)
    if error is not None:
        raise error
    return frozen if frozen is not None else study._storage.get_trial(trial._trial_id)


def tidy(study, cfg, space) -> None:
    """Under the study lock: fail trials whose process died (this machine) or whose heartbeat stopped (any
    machine), and (re-)enqueue missing baselines."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled

    with quiet():
        fail_dead_local_trials(study)
        fail_unclaimed_trials(study, cfg.search.heartbeat_grace)
        if is_heartbeat_enabled(study._storage):
            fail_stale_trials(study)
    if cfg.search.baselines:
        enqueue_baselines(study, space.baseline_students(cfg.search.baseline_students))


class Decider:
    """What a worker does next (:func:`next_step`), with the study tidied (:func:`tidy`) at most every
    ``every_s`` seconds while trials are being started, and always just before deciding to wait or to stop.

    Tidying reads the study three times (dead local workers, unclaimed trials, stale heartbeats) plus the
    baselines: 5-10 ms per trial on SQLite. A dead worker's trial is still RUNNING for the counts until it
    is failed, so starting trials meanwhile never overshoots; a worker only waits or stops after a tidy,
    so a dead trial's retry and a failed baseline's re-run are never missed. Call under the study lock."""

    def __init__(self, cfg, space, every_s: float = 5.0) -> None:
        self.cfg, self.space, self.every_s = cfg, space, float(every_s)
        self.last = -float("inf")
        self.seen: list = []  # the study's trials the last decision read
        self.beaten: int | None = None  # the trial the last ask created with its first heartbeat

    def prime(self, study, trial) -> None:
        """Hand the trials the last decision read to the study's pruner for ``trial``, just asked: a pruner that
        reads the completed trials once per trial (:class:`~..completed_once.CompletedOncePerTrial`) starts
        from this read instead of reading the study again at the trial's first epoch."""
        prime = getattr(study.pruner, "prime", None)
        if prime is not None:
            prime(study, trial.number, self.seen)

    def ask(self, study, worker: str):
        """``study.ask()`` right after a decision to ask (under the study lock), the trial claimed by ``worker``
        (:func:`~..trial_record.record_worker`) -- with fewer statements.

        Optuna's ``ask`` first reads the study for a waiting trial to pop. When the decision's own read saw
        none, the new trial is created at once, as ``ask`` then does (the study's per-trial cache cleared,
        ``create_new_trial``, ``optuna.Trial``). On a lean storage the claim and the first heartbeat are
        stored in the creation's transaction and ``optuna.Trial``'s read of the new trial is answered from the
        creation (``beaten`` then names the trial, whose heartbeat need not beat again before it runs). A trial
        enqueued since the decision's read (every enqueue is under the study lock) is popped by the next ask."""
        import optuna
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self.beaten = None
        storage = study._storage
        with quiet():  # Optuna warns that heartbeats are meant for study.optimize; the workers run them
            if any(t.state == optuna.trial.TrialState.WAITING for t in self.seen):
                trial = study.ask()
            else:
                creating = getattr(backend_of(study._storage), "creating", None)
                beat = is_heartbeat_enabled(storage)
                with creating(tr.worker_attrs(worker), heartbeat=beat) if creating else contextlib.nullcontext():
                    study._thread_local.cached_all_trials = None
                    trial = optuna.Trial(study, storage.create_new_trial(study._study_id))
                if creating is not None:
                    self.beaten = trial._trial_id if beat else None
                    return trial
        tr.record_worker(trial, worker)
        return trial

    def next_trial(self, study, trials: int, worker: str) -> tuple[str, Any]:
        """What a worker loop does before each trial: under the study lock, with the study read once for the
        whole step (:func:`~..study_reads.one_study_read`: the decision's read also serves the new trial's
        sampler), decide (:meth:`__call__`); on ``"ask"``, ask for a trial claimed by ``worker``
        (:meth:`ask`: a kill from then on leaves a dead owner) and hand the decision's read to the pruner
        (:meth:`prime`). Returns ``(step, trial)``, ``trial`` None unless the step is ``"ask"``."""
        with study_lock(self.cfg), one_study_read(study):
            step = self(study, trials)
            if step != "ask":
                return step, None
            trial = self.ask(study, worker)
            self.prime(study, trial)
            return step, trial

    def _tidy(self, study) -> None:
        tidy(study, self.cfg, self.space)
        self.last = time.monotonic()

    def __call__(self, study, trials: int) -> str:
        fresh = time.monotonic() - self.last >= self.every_s
        if fresh:
            self._tidy(study)
        step, self.seen = read_step(study, trials)
        if step != "ask" and not fresh:
            self._tidy(study)
            step, self.seen = read_step(study, trials)
        return step


def _now() -> str:
    import datetime

    return datetime.datetime.now().isoformat(timespec="seconds")


def start_run(ctx: StudyContext, space: SearchSpace, study, *, trials: int, epochs: int | None,
              multi_objective: bool, progress, worker: str | int | None, fingerprint: str | None
              ) -> tuple[Objective, int]:
    """What every backend does before its first trial: the objective; under the study lock, tidy the study
    (dead trials, missing baselines), count what is stored and register the run; a sampler seeded for this
    run and worker (a resume or a second worker never replays a trial). Returns the objective and the stored
    trial count.

    The seed comes from the study seed, the number of trials stored and the worker's name -- ``--worker``,
    else the run's place in the study's run register (``run 0`` for the first run): a study run by one
    worker is reproducible (same study file, same seed, same trials), while workers started together still
    draw apart. The register records each run's worker, seed and stored trial count."""
    cfg = ctx.cfg
    objective = Objective(ctx, space, epochs=epochs, multi_objective=multi_objective, progress=progress,
                          fingerprint=fingerprint)
    with study_lock(cfg):
        tidy(study, cfg, space)
        n_stored = len(study.get_trials(deepcopy=False))
        index = len(tr.runs_of(study))
        name = str(worker) if worker is not None else f"run {index}"
        seed = run_seed(cfg.seed, name, n_stored)
        tr.record_run(study, {"worker": worker_id(), "name": name, "sampler_seed": seed,
                              "trials_stored": n_stored, "started": _now()})
    study.sampler = make_sampler(cfg, space, seed=seed)
    if progress is not None:
        progress.search_started(study, max(0, trials - counted(study)) + waiting(study), trials)
    return objective, n_stored


def collect_after_trial(device) -> None:
    """Free what a finished trial left in reference cycles. On an accelerator, a full collection: its memory
    is invisible to Python's collection thresholds, so a cycle holding a trial's tensors would keep them from
    the next trial. On the CPU, the young generations only (microseconds): a full collection there costs
    0.5-2 ms per trial, growing with the study, for memory that Python's own thresholds already collect."""
    if getattr(device, "type", "cpu") == "cpu":
        gc.collect(1)
    else:
        gc.collect()


def run_optuna(ctx: StudyContext, space: SearchSpace, study, *, trials: int, timeout: float | None,
               epochs: int | None, multi_objective: bool, progress=None, worker: str | int | None = None,
               poll: float = 0.25, fingerprint: str | None = None) -> int:
    """Run until the study holds ``trials`` finished searched trials plus its baselines, whichever worker ran
    them. A worker with nothing left to start waits for the others' running trials (failing them if their
    process dies or their heartbeat stops, and running their retries), so the study always ends complete
    while one worker lives; it looks again every ``poll`` seconds (a lock and one read, ~2 ms on SQLite: a
    second's poll made a two-worker study end up to a second after its last trial). Returns how many trials
    this call ran."""
    cfg = ctx.cfg
    objective, _ = start_run(ctx, space, study, trials=trials, epochs=epochs, multi_objective=multi_objective,
                             progress=progress, worker=worker, fingerprint=fingerprint)
    deadline = None if timeout is None else time.monotonic() + timeout
    decide = Decider(cfg, space)
    ran = 0
    # the study's long-lived objects (modules, data, teacher, caches) move to the permanent generation: the
    # collection after each trial then scans only what trials created (0.06-0.2 s per trial on digits before)
    gc.freeze()
    try:
        while deadline is None or time.monotonic() < deadline:
            step, trial = decide.next_trial(study, trials, worker_id())
            if step == "stop":
                break
            if trial is None:  # others are running the last trials: wait for them (or their retries)
                time.sleep(poll)
                continue
            frozen = run_one_trial(study, trial, objective, first_beat=decide.beaten != trial._trial_id)
            ran += 1
            if progress is not None:
                progress.trial_finished(study, frozen)
            collect_after_trial(ctx.device)
    finally:
        gc.unfreeze()  # back to the oldest generation: a later study in this process collects them again
    return ran
