"""Ray Tune backend (``search.backend: ray``): the same study, its trials trained on a Ray cluster.

The Optuna study in autokd's storage stays the single source of truth; Ray only runs the training:

- the **driver** (this process) opens the study context once (teacher trained or loaded, its logits cached),
  fails stale trials and enqueues baselines under the study lock (as the Optuna backend does), and runs a
  ``tune.Tuner`` whose searcher (:class:`StudySearcher`) asks the study for each trial, builds and records
  its recipe (:meth:`Objective.prepare`) and, when the worker is done, records the outcome
  (:meth:`Objective.finish`) — the same attributes, intermediate values, states and ``trials/<n>/`` files;
- **workers** only train (:func:`train_trial`), reporting each epoch with ``tune.report``; the teacher's
  weights and cached logits reach each worker process once (``tune.with_parameters``, numpy arrays);
- **pruning**: the Tune scheduler (:class:`StudyScheduler`) stores each epoch's accuracy as the trial's
  intermediate value and asks the study's pruner (median / SHA — Optuna's asynchronous successive halving,
  i.e. ASHA — / Hyperband), never for baselines. A pruned trial is not killed by Tune: the worker learns the
  decision after its epoch (a flag on a tiny actor), stops, measures and reports its final metrics like an
  Optuna-backend trial, and the study records it PRUNED with its reason;
- **resume** is the study's: rerunning after a killed driver fails its RUNNING trials (their worker, the
  driver, is dead) and re-enqueues them; a fresh Tuner runs only what is missing (``Tuner.restore`` is not
  used: Ray's saved searcher state lags the database after a crash).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import AutoKDError, ConfigError
from .. import trial_record as tr
from ..batched_writes import IntermediateValues
from ..objective import Objective, Outcome, report_epoch, train_trial
from .optuna_backend import (
    Decider,
    Interrupted,
    run_one_trial,
    start_run,
)
from .ray_processes import descendants, reap_orphans, remember_processes, stop_processes
from .workers import RetryTrial, worker_id

if TYPE_CHECKING:
    from ...config import StudyConfig
    from ...context import StudyContext
    from ..space import SearchSpace

__all__ = ["run_ray", "check_ray", "StudySearcher", "StudyScheduler"]


def check_ray(cfg: StudyConfig) -> None:
    """One-line errors before anything trains: Ray installed, a mode it runs, resources that make sense."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        raise ConfigError("search.backend: ray needs Ray Tune; pip install 'autokd[ray]'")
    if cfg.search.mode != "search":
        raise ConfigError(f"search.backend: ray runs search.mode: search; {cfg.search.mode!r} runs with "
                          "backend: optuna")
    ray_spec = cfg.search.ray
    if ray_spec.gpus_per_trial > 0 and cfg.device == "cpu":
        raise ConfigError(f"search.ray.gpus_per_trial: {ray_spec.gpus_per_trial} GPUs per trial with device: "
                          "cpu; set device: auto (or cuda) or gpus_per_trial: 0")
    if ray_spec.address is not None and ray_spec.num_cpus is not None:
        raise ConfigError("search.ray.num_cpus: sizes the local Ray started without an address; a cluster "
                          f"({ray_spec.address}) has its own resources")


# ------------------------------------------------------------------------------------------ workers
@dataclass
class _Kit:
    """What every worker process needs, sent once per process through ``tune.with_parameters``."""

    cfg: Any  # StudyConfig
    key: str  # identifies the teacher + study: a worker process keeps one context per key
    teacher: dict[str, Any]  # the teacher's state dict as numpy arrays (zero-copy from the object store)
    logits: Any  # the teacher's cached logits over the training split (numpy) or None (online teacher)
    threads: int  # torch threads per trial = CPUs per trial
    board: Any  # the prune board actor


_CONTEXTS: dict[str, Any] = {}


def _context(kit: _Kit):
    """This process's study context for ``kit`` (data built, teacher loaded, logits adopted once)."""
    if kit.key not in _CONTEXTS:
        import torch

        from ...context import StudyContext
        from ...train import CachedTeacher

        _CONTEXTS.clear()
        # arrays from the object store are read-only views; torch needs its own (once per process)
        weights = {k: torch.from_numpy(v.copy()) for k, v in kit.teacher.items()}
        ctx = StudyContext.open(kit.cfg, log=lambda *a: None, teacher_weights=weights)
        if kit.logits is not None and isinstance(ctx.teacher_source, CachedTeacher):
            ctx.teacher_source.adopt_logits(torch.from_numpy(kit.logits.copy()))
        _CONTEXTS[kit.key] = ctx
    return _CONTEXTS[kit.key]


def _train(config: dict[str, Any], kit: _Kit) -> None:
    """The Tune trainable: train one recipe, ``tune.report`` each epoch, then the whole outcome."""
    import ray
    import torch
    from ray import tune

    from ...recipe import Recipe

    torch.set_num_threads(kit.threads)
    number, prunable = config["number"], config["prunable"]

    def report(epoch: int, acc: float) -> bool:
        tune.report({"epoch": epoch, "val_acc": acc})
        return prunable and ray.get(kit.board.pruned.remote(number))

    error = ""
    try:
        ctx = _context(kit)
        recipe = Recipe.from_dict(json.loads(config["recipe"]), source=f"trial {number}")
        outcome = train_trial(ctx.trial_trainer(), recipe, seeds=config["seeds"], report=report,
                              epochs=config["epochs"])
    except Exception as e:  # not a trial's outcome (this node's data or setup, a bug): the driver stops the search
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        outcome = Outcome(failed=error)
    tune.report({"outcome": json.dumps(asdict(outcome)), "error": error})


class _PruneBoard:
    """Trials the scheduler pruned, read by their workers after each epoch (a Ray actor)."""

    def __init__(self) -> None:
        self._pruned: set[int] = set()

    def prune(self, number: int) -> None:
        self._pruned.add(number)

    def pruned(self, number: int) -> bool:
        return number in self._pruned


# ------------------------------------------------------------------------------------------ driver
@dataclass
class _Live:
    trial: Any  # the optuna Trial
    recipe: Any
    heartbeat: contextlib.ExitStack
    prunable: bool
    values: Any  # its IntermediateValues: epochs reach the storage at most once a second

    def flush(self) -> None:
        """Write the epochs not yet stored (a trial that another worker failed as stale refuses them)."""
        import optuna

        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.values.flush()


class StudySearcher:
    """A Tune searcher that is the study: ``suggest`` asks it for the next trial (waiting or sampled by
    autokd's sampler) and prepares it; ``on_trial_complete`` records the worker's outcome."""

    def __init__(self, ctx: StudyContext, space: SearchSpace, study, objective: Objective, *, trials: int,
                 deadline: float | None, progress=None, board=None) -> None:
        from ray.tune.search import Searcher

        self._base = Searcher
        self.ctx, self.cfg, self.space, self.study, self.objective = ctx, ctx.cfg, space, study, objective
        self.trials, self.deadline, self.progress, self.board = trials, deadline, progress, board
        self.live: dict[str, _Live] = {}
        self.ran = 0
        self.error: BaseException | None = None
        self.decide = Decider(self.cfg, space)

    # the Searcher protocol (see :func:`_as_searcher`)
    def suggest(self, trial_id: str):
        import time

        while self.error is None and (self.deadline is None or time.monotonic() < self.deadline):
            # the driver owns the trial (fail_dead_local_trials)
            step, trial = self.decide.next_trial(self.study, self.trials, worker_id())
            if step == "stop":
                return self._base.FINISHED
            if trial is None:
                return None  # others run the last trials: Tune asks again
            beat = contextlib.ExitStack()
            beat.enter_context(_heartbeat(self.study, trial, first=self.decide.beaten != trial._trial_id))
            try:
                recipe = self.objective.prepare(trial)
            except BaseException as e:  # pruned before training (prescreen, duplicate baseline) or an error
                beat.close()
                try:
                    frozen = run_one_trial(self.study, trial, _raiser(e))
                except BaseException as err:  # recorded FAIL; raised after the run
                    self.error = err
                    return self._base.FINISHED
                self._finished(frozen)
                continue
            prunable = not tr.is_baseline(trial)
            self.live[trial_id] = _Live(trial, recipe, beat, prunable, IntermediateValues(trial))
            return {"number": trial.number, "prunable": prunable and not self.objective.multi,
                    "recipe": json.dumps(recipe.to_dict(), separators=(",", ":")),
                    "seeds": list(self.objective.seeds), "epochs": self.objective.trial_epochs(recipe)}
        return self._base.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.progress is not None and "epoch" in result and trial_id in self.live:
            live = self.live[trial_id]
            self.progress.epoch({"epoch": result["epoch"], "val_acc": result["val_acc"],
                                 "epochs": self.objective.trial_epochs(live.recipe), "trial": live.trial.number})

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self.live.pop(trial_id, None)
        if live is None:
            return
        live.heartbeat.close()
        raw = (result or {}).get("outcome")
        try:
            if raw is None:  # the worker died (or Ray stopped it) before reporting an outcome
                frozen = self._lost(live, "the Ray worker running it stopped before reporting (see the Ray logs)")
            else:
                outcome = Outcome(**json.loads(raw))
                frozen = run_one_trial(self.study, live.trial,
                                       lambda t: self.objective.finish(t, live.recipe, outcome, live.values))
                if result.get("error"):
                    self.error = AutoKDError(f"trial {live.trial.number} failed in a Ray worker: {result['error']}")
        except BaseException as e:  # a baseline's invalid configuration: recorded, then raised after the run
            self.error = e
            return
        self._finished(frozen)

    def _finished(self, frozen) -> None:
        self.ran += 1
        if self.progress is not None:
            self.progress.trial_finished(self.study, frozen)

    def _lost(self, live: _Live, reason: str):
        """Fail a trial whose worker is gone and enqueue its retry (as a dead worker's trial is)."""
        import optuna

        live.flush()
        try:
            tr.record_failed(live.trial, reason)
            frozen = self.study.tell(live.trial, state=optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            # another worker already failed it as stale (its heartbeat stopped) and enqueued its retry
            return self.study._storage.get_trial(live.trial._trial_id)
        RetryTrial()(self.study, frozen)
        return frozen

    def abandon(self, signal_name: str | None) -> None:
        """After the Tuner: fail the trials still open (Ctrl-C, SIGTERM, an error); an interruption is
        recorded as such (like the Optuna backend), any other end as a lost worker (retried)."""
        import optuna

        for trial_id in list(self.live):
            live = self.live.pop(trial_id)
            live.heartbeat.close()
            if signal_name is not None:
                live.flush()
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # failed as stale meanwhile
                    tr.record_interrupted(live.trial, signal_name)
                    self.study.tell(live.trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            else:
                self._lost(live, "the Ray run ended before this trial reported")


class StudyScheduler:
    """A Tune scheduler that is the study's pruner: each epoch's accuracy becomes the trial's (0-based)
    intermediate value and the pruner decides; baselines are never pruned. The decision reaches the worker
    through the prune board, so the trial ends its epoch, measures and reports like any pruned trial."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        import ray

        live = self.searcher.live.get(trial.trial_id)
        if live is not None and "epoch" in result:
            stop = report_epoch(live.trial, int(result["epoch"]), float(result["val_acc"]),
                                prunable=live.prunable, multi=self.searcher.objective.multi, values=live.values)
            if stop:
                ray.get(self.searcher.board.prune.remote(live.trial.number))
        return "CONTINUE"


class _Unpickled:
    """Tune pickles its searcher and scheduler into its experiment state (for ``Tuner.restore``, which autokd
    does not use: the study is the state); the live study they hold stays out of the pickle."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_impl"}


def _as_searcher(impl: StudySearcher):
    """Wrap ``impl`` in a real ``ray.tune.search.Searcher`` subclass (Ray imported only here)."""
    from ray.tune.search import Searcher

    class _Searcher(_Unpickled, Searcher):
        def __init__(self, impl: StudySearcher) -> None:  # no closure over impl: the class pickles by value
            super().__init__(metric=None, mode=None)
            self._impl = impl

        def suggest(self, trial_id):
            return self._impl.suggest(trial_id)

        def on_trial_result(self, trial_id, result):
            self._impl.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            self._impl.on_trial_complete(trial_id, result, error)

    return _Searcher(impl)


def _as_scheduler(impl: StudyScheduler):
    from ray.tune.schedulers import FIFOScheduler

    class _Scheduler(_Unpickled, FIFOScheduler):
        _supports_buffered_results = False  # every epoch reaches the pruner on its own

        def __init__(self, impl: StudyScheduler) -> None:
            super().__init__()
            self._impl = impl

        def on_trial_result(self, tune_controller, trial, result):
            return self._impl.on_trial_result(tune_controller, trial, result)

    return _Scheduler(impl)


def _raiser(e: BaseException):
    def objective(trial):
        raise e
    return objective


def _heartbeat(study, trial, first: bool = True):
    from .workers import heartbeat

    return heartbeat(study, trial._trial_id, first=first)


def _short_dirname(trial) -> str:
    return f"t{trial.config.get('number', trial.trial_id)}"


def _kit(ctx: StudyContext, threads: int, board) -> _Kit:
    from ...fingerprint import config_hash
    from ...train import CachedTeacher

    teacher = {k: v.detach().cpu().numpy() for k, v in ctx.teacher.state_dict().items()}
    logits = None
    if isinstance(ctx.teacher_source, CachedTeacher):  # warmed once here, shipped to every worker process
        logits = ctx.teacher_source.logits().detach().cpu().numpy()
    key = config_hash({"teacher": ctx.teacher_info.get("fingerprint"), "study": ctx.cfg.model_dump(mode="json"),
                       "base": str(ctx.cfg.base_dir)})
    return _Kit(ctx.cfg, key, teacher, logits, threads, board)


@contextlib.contextmanager
def ray_session(cfg: StudyConfig):
    """Connect to ``search.ray.address`` or start a local Ray (no dashboard) for the run; shut it down after
    the run, on Ctrl-C and on errors. Processes a killed earlier run left behind are stopped first."""
    import ray

    with _environ(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",  # no per-trial CSV/JSON/TensorBoard files
                  TUNE_DISABLE_SIGINT_HANDLER="1",  # Ctrl-C reaches autokd, which records it
                  RAY_AIR_NEW_OUTPUT="0"):
        if ray.is_initialized():  # the caller's own Ray session: use it, leave it running
            yield
        else:
            with _own_ray(cfg):
                yield


@contextlib.contextmanager
def _environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


@contextlib.contextmanager
def _own_ray(cfg: StudyConfig):
    import ray

    spec = cfg.search.ray
    registry = cfg.study_dir / "ray"
    reap_orphans(registry)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                              "configure_logging": True}
    if spec.address is None:
        before = descendants(os.getpid())
        ray.init(address="local", num_cpus=spec.num_cpus, **kwargs)
        record = remember_processes(registry, before)
    else:
        try:
            ray.init(address=spec.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConfigError(f"search.ray.address: cannot join the Ray cluster at {spec.address!r} ({detail}); "
                              "start one with `ray start --head`, or omit address to run a local Ray") from None
        record = None
    try:
        yield
    finally:
        if record is not None:
            remember_processes(registry)  # add the workers and agents started since
        ray.shutdown()
        if record is not None:
            stop_processes(record)  # what shutdown missed (e.g. agents a Ctrl-C to the process group orphaned)


def run_ray(ctx: StudyContext, space: SearchSpace, study, *, trials: int, timeout: float | None,
            epochs: int | None, multi_objective: bool, progress=None, worker: str | int | None = None,
            fingerprint: str | None = None) -> int:
    """Run until the study holds ``trials`` finished searched trials plus its baselines, training on Ray.
    Returns how many trials this call finished."""
    import time

    cfg = ctx.cfg
    spec = cfg.search.ray
    objective, n_stored = start_run(ctx, space, study, trials=trials, epochs=epochs,
                                    multi_objective=multi_objective, progress=progress, worker=worker,
                                    fingerprint=fingerprint)
    deadline = None if timeout is None else time.monotonic() + timeout
    with ray_session(cfg):
        import ray
        from ray import tune

        board = ray.remote(num_cpus=0)(_PruneBoard).remote()
        run_dir = Path(cfg.study_dir, "ray", f"run-{n_stored}-{os.getpid()}").resolve()
        impl = StudySearcher(ctx, space, study, objective, trials=trials, deadline=deadline, progress=progress,
                             board=board)
        trainable = tune.with_resources(tune.with_parameters(_train, kit=_kit(ctx, spec.cpus_per_trial, board)),
                                        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_as_searcher(impl), scheduler=_as_scheduler(StudyScheduler(impl)),
                                        num_samples=-1, max_concurrent_trials=spec.max_concurrent,
                                        reuse_actors=True, trial_dirname_creator=_short_dirname,
                                        trial_name_creator=_short_dirname),
            run_config=tune.RunConfig(name=run_dir.name, storage_path=str(run_dir.parent), verbose=0,
                                      log_to_file=False),
        )
        signal_name = None
        try:
            tuner.fit()
        except KeyboardInterrupt:
            signal_name = "SIGINT"
            raise Interrupted("SIGINT", 130) from None
        except Interrupted as e:
            signal_name = e.signal_name
            raise
        finally:
            impl.abandon(signal_name)
            shutil.rmtree(run_dir, ignore_errors=True)  # Tune's own state: the study holds everything
    if impl.error is not None:
        raise impl.error
    return impl.ran
