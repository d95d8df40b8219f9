"""The per-trial objective: suggest a recipe (or run a baseline), train it, record everything."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..files import atomic_write_text
from ..recipe import Recipe
from ..train.trainer import TrainingDiverged
from . import trial_record as tr
from .batched_writes import IntermediateValues, grouped_writes
from .study_reads import one_study_read

if TYPE_CHECKING:
    from ..context import StudyContext
    from .space import SearchSpace

__all__ = ["Objective", "Outcome", "train_trial", "report_epoch"]


@dataclass
class Outcome:
    """What training one trial produced, as plain data: under Ray it travels from a worker to the driver,
    which records it (:meth:`Objective.finish`) exactly as the in-process backend does."""

    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False  # the pruner stopped it after ``metrics["epochs"]`` epochs
    seed_accs: list[float] = field(default_factory=list)  # per-seed val acc when it trained several seeds
    diverged: str | None = None  # the loss became non-finite (the reason)
    invalid: str | None = None  # the components refused the recipe (a ConfigError's message)
    failed: str | None = None  # a RuntimeError (e.g. out of memory): the trial FAILs


def report_epoch(trial, epoch: int, acc: float, *, prunable: bool, multi: bool, values=None) -> bool:
    """Store epoch ``epoch``'s (0-based) validation accuracy as the trial's intermediate value (through
    ``values``, an :class:`~.batched_writes.IntermediateValues`, when given) and ask the study's pruner
    whether to stop. Baselines are never pruned; Optuna does not prune multi-objective trials."""
    if multi:
        return False
    if values is not None:
        values.report(acc, epoch)
    else:
        trial.report(acc, epoch)
    return prunable and trial.should_prune()


def train_trial(trainer, recipe: Recipe, *, seeds: list[int], report, epochs: int | None = None) -> Outcome:
    """Train ``recipe`` for ``epochs`` (default: its own; ``report(epoch, acc) -> stop?`` after each epoch).
    With several ``seeds`` a trial that survives its first seed trains the others (no pruning) and its value
    is their mean val acc."""
    epochs = epochs or recipe.optim.epochs
    try:
        res = trainer.fit(recipe, epochs=epochs, report=report)
    except TrainingDiverged as e:
        return Outcome(diverged=str(e))
    except ConfigError as e:
        return Outcome(invalid=str(e))
    except RuntimeError as e:
        return Outcome(failed=_one_line(e))
    m = dict(res.metrics)
    accs: list[float] = []
    if not res.stopped and len(seeds) > 1:
        accs = [m["val_acc"]]
        for seed in seeds[1:]:
            try:
                extra = trainer.fit(recipe.with_seed(seed), epochs=epochs, measure=False)
            except TrainingDiverged as e:
                return Outcome(diverged=f"seed {seed}: {e}")
            except RuntimeError as e:
                return Outcome(failed=_one_line(e))
            accs.append(extra.metrics["val_acc"])
            m["epochs"] += extra.metrics["epochs"]
            m["train_time_s"] += extra.metrics["train_time_s"]
        m["val_acc"] = statistics.mean(accs)
    return Outcome(metrics=m, history=res.history, stopped=res.stopped, seed_accs=accs)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


class Objective:
    """Callable for ``study.optimize``. Returns validation accuracy (or ``(val_acc, params)`` when the
    study is multi-objective). Selection uses the validation split only; the test split is never touched.

    A call is three steps: :meth:`prepare` (in the process that owns the study), :func:`train_trial` (anywhere:
    a Ray worker runs only this step) and :meth:`finish` (back in the owner), so every backend records the
    same attributes, files and states.

    With ``search.seeds_per_trial: k > 1`` a trial trains its first seed under the pruner (intermediate
    values are that seed's curve) and, if it survives, k−1 more seeds; its value is the mean validation
    accuracy (per-seed values in the ``val_acc_seeds`` attribute), which makes selection less noisy on small
    validation splits."""

    def __init__(self, ctx: StudyContext, space: SearchSpace, *, epochs: int | None, multi_objective: bool,
                 progress=None, fingerprint: str | None = None) -> None:
        self.ctx = ctx
        self.fingerprint = fingerprint
        self.space = space
        self.epochs = epochs
        self.multi = multi_objective
        self.progress = progress
        self.seeds = [ctx.cfg.seed + i for i in range(ctx.cfg.search.seeds_per_trial)]
        self.prescreen = None
        spec = ctx.cfg.search.prescreen
        if spec is not None:
            from .prescreen import Prescreen

            self.prescreen = Prescreen.for_context(ctx, spec)

    def _prescreen(self, trial, recipe: Recipe, is_baseline: bool) -> None:
        """Score every trial with the zero-cost proxy (stored for the report); prune a searched trial before
        any training when its score falls below the running quantile of the study's scores."""
        import optuna

        from .prescreen import Prescreen

        score = self.prescreen.score(recipe, None, self.ctx.teacher)
        tr.record_proxy(trial, score)
        if is_baseline or tr.diswot_rank_of(trial) is not None:
            return
        prune, why = self.prescreen.decide(score, Prescreen.study_history(trial.study, exclude=trial.number))
        if prune:
            tr.record_pruned(trial, why, epochs=0)
            raise optuna.TrialPruned(why)

    def recipe_for(self, trial) -> Recipe:
        search = self.ctx.cfg.search
        kind = tr.baseline_of(trial)
        if kind is not None:
            recipe = self.space.baseline(kind, student=tr.baseline_student_of(trial),
                                         temperature=search.baseline_temperature, kd_weight=search.baseline_kd_weight,
                                         ce_weight=search.baseline_ce_weight)
        else:
            recipe = self.space.suggest(trial)
        recipe.seed = self.ctx.cfg.seed
        if self.epochs:
            recipe.optim.epochs = self.epochs  # the recipe records exactly what was trained
        return recipe

    def _skip_duplicate_baseline(self, trial) -> None:
        """A baseline that another trial already ran or is running (same kind, same student) is pruned
        before it trains (belt and braces: baselines are enqueued once, under the study lock)."""
        import optuna

        kind, label = tr.baseline_of(trial), trial.user_attrs.get(tr.Key.BASELINE_STUDENT_LABEL.value)
        live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        for t in trial.study.get_trials(deepcopy=False, states=live):
            if (t.number != trial.number and tr.baseline_of(t) == kind
                    and t.user_attrs.get(tr.Key.BASELINE_STUDENT_LABEL.value) == label):
                reason = f"duplicate baseline: trial {t.number} runs the same {kind.value} baseline"
                tr.record_pruned(trial, reason, epochs=0)
                raise optuna.TrialPruned(reason)

    def prepare(self, trial) -> Recipe:
        """Everything before training, in the process that owns the study: record the worker, skip a duplicate
        baseline, build and record the recipe, prescreen it. Raises ``optuna.TrialPruned`` (reason recorded)."""
        from .backends.workers import worker_id

        if tr.worker_of(trial) is None:  # the backends claim a trial right after ``ask``
            tr.record_worker(trial, worker_id())
        is_baseline = tr.is_baseline(trial)
        if is_baseline:
            self._skip_duplicate_baseline(trial)
        with grouped_writes(trial):  # the recipe's 4-8 parameters and its record: one write
            with one_study_read(trial.study):  # a sampler reading the study at each call reads it once
                recipe = self.recipe_for(trial)
            tr.record_recipe(trial, recipe, fingerprint=self.fingerprint)
        if self.prescreen is not None:
            self._prescreen(trial, recipe, is_baseline)
        if self.progress is not None:
            self.progress.trial_started(trial.number, recipe, self.trial_epochs(recipe))
        return recipe

    def trial_epochs(self, recipe: Recipe) -> int:
        """Epochs a trial trains: ``search.fidelity.epochs`` when set (the recipe records full fidelity),
        else the recipe's."""
        return self.ctx.cfg.search.fidelity.epochs or recipe.optim.epochs

    def finish(self, trial, recipe: Recipe, outcome: Outcome, values: IntermediateValues | None = None) -> Any:
        """Record what training produced (the last intermediate ``values`` still pending, attributes, in one
        write; ``trials/<n>/`` files) and turn it into the trial's result: its value(s), or
        ``optuna.TrialPruned`` / ``RuntimeError`` (FAIL) / a baseline's ConfigError."""
        with grouped_writes(trial, until_tell=True):  # stored with the state change where the storage can
            if values is not None:
                values.flush()
            return self._result(trial, recipe, outcome)

    def _result(self, trial, recipe: Recipe, outcome: Outcome) -> Any:
        import optuna

        if outcome.failed is not None:  # e.g. out of memory: the trial FAILs (recorded), the study goes on
            tr.record_failed(trial, outcome.failed)
            raise RuntimeError(outcome.failed)
        if outcome.invalid is not None:
            if tr.is_baseline(trial):
                raise ConfigError(outcome.invalid)
            # a sampled combination the components refuse (e.g. a transform chain too large): not a bug of
            # the study, so the search goes on; the reason is recorded for the report
            reason = f"invalid configuration: {outcome.invalid}"
            tr.record_pruned(trial, reason, epochs=0)
            raise optuna.TrialPruned(reason)
        if outcome.diverged is not None:  # KD-Zero's loss rejection: a distiller whose loss explodes is pruned
            tr.record_pruned(trial, outcome.diverged, diverged=True)
            raise optuna.TrialPruned(outcome.diverged)
        m = dict(outcome.metrics)
        reason = None
        if outcome.stopped:
            reason = f"pruned at epoch {m['epochs'] - 1}: val acc {m['val_acc']:.4f} (by {self.ctx.cfg.search.pruner})"
        tr.record_metrics(trial, m, seed_accs=outcome.seed_accs, pruned=reason)
        self._save(trial.number, recipe, m, outcome.history)
        if reason is not None:
            raise optuna.TrialPruned(reason)
        if self.multi:
            return m["val_acc"], float(m["params"])
        return m["val_acc"]

    def __call__(self, trial) -> Any:
        recipe = self.prepare(trial)
        is_baseline = tr.is_baseline(trial)

        values = IntermediateValues(trial)

        def report(epoch: int, acc: float) -> bool:
            return report_epoch(trial, epoch, acc, prunable=not is_baseline, multi=self.multi, values=values)

        try:
            outcome = train_trial(self.ctx.trial_trainer(), recipe, seeds=self.seeds, report=report,
                                  epochs=self.trial_epochs(recipe))
        except BaseException:
            values.flush()  # before the trial is told, however training ended
            raise
        return self.finish(trial, recipe, outcome, values)

    def _save(self, number: int, recipe: Recipe, metrics: dict, history: list) -> None:
        """The trial's files (derived from its stored record, so written without fsync; see ``atomic_write``)."""
        d = self.ctx.cfg.study_dir / "trials" / str(number)
        atomic_write_text(d / "metrics.json", json.dumps({"metrics": metrics, "history": history}, indent=1),
                          durable=False)
        atomic_write_text(d / "recipe.yaml", recipe.to_yaml(), durable=False)
