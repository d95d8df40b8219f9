"""The per-trial objective: suggest a recipe (or run a baseline), train it, record everything."""

from __future__ import annotations

import json
import statistics
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..files import atomic_write_text
from ..recipe import Recipe
from ..train.trainer import TrainingDiverged
from . import trial_record as tr

if TYPE_CHECKING:
    from ..context import StudyContext
    from .space import SearchSpace

__all__ = ["Objective"]


class Objective:
    """Callable for ``study.optimize``. Returns validation accuracy (or ``(val_acc, params)`` when the
    study is multi-objective). Selection uses the validation split only; the test split is never touched.

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

    def __call__(self, trial) -> Any:
        import optuna

        from .backends.workers import worker_id

        tr.record_worker(trial, worker_id(), self.fingerprint)
        is_baseline = tr.is_baseline(trial)
        if is_baseline:
            self._skip_duplicate_baseline(trial)
        recipe = self.recipe_for(trial)
        # search.fidelity: trials train fewer epochs / on a data subset; the recipe records full fidelity
        epochs = self.ctx.cfg.search.fidelity.epochs or recipe.optim.epochs
        tr.record_recipe(trial, recipe)
        if self.prescreen is not None:
            self._prescreen(trial, recipe, is_baseline)
        if self.progress is not None:
            self.progress.trial_started(trial.number, recipe, epochs)

        def report(epoch: int, acc: float) -> bool:
            if self.multi:
                return False  # Optuna does not prune multi-objective trials
            trial.report(acc, epoch)
            return (not is_baseline) and trial.should_prune()

        trainer = self.ctx.trial_trainer()
        try:
            res = trainer.fit(recipe, epochs=epochs, report=report)
        except TrainingDiverged as e:  # KD-Zero's loss rejection: a distiller whose loss explodes is pruned
            tr.record_pruned(trial, str(e), diverged=True)
            raise optuna.TrialPruned(str(e)) from None
        except ConfigError as e:
            if is_baseline:
                raise
            # a sampled combination the components refuse (e.g. a transform chain too large): not a bug of
            # the study, so the search goes on; the reason is recorded for the report
            reason = f"invalid configuration: {e}"
            tr.record_pruned(trial, reason, epochs=0)
            raise optuna.TrialPruned(reason) from None
        except RuntimeError as e:  # e.g. out of memory: the trial FAILs (recorded), the study goes on
            tr.record_failed(trial, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
            raise
        m = dict(res.metrics)
        if not res.stopped and len(self.seeds) > 1:
            # the trial survived on its first seed: train the other seeds (no pruning) and select on the mean
            accs = [m["val_acc"]]
            for seed in self.seeds[1:]:
                try:
                    extra = trainer.fit(recipe.with_seed(seed), epochs=epochs, measure=False)
                except TrainingDiverged as e:
                    tr.record_pruned(trial, f"seed {seed}: {e}", diverged=True)
                    raise optuna.TrialPruned(str(e)) from None
                accs.append(extra.metrics["val_acc"])
                m["epochs"] += extra.metrics["epochs"]
                m["train_time_s"] += extra.metrics["train_time_s"]
            tr.record_seeds(trial, accs)
            m["val_acc"] = statistics.mean(accs)
        tr.record_metrics(trial, m)
        self._save(trial.number, recipe, m, res.history)
        if res.stopped:
            reason = f"pruned at epoch {m['epochs'] - 1}: val acc {m['val_acc']:.4f} (by {self.ctx.cfg.search.pruner})"
            tr.record_pruned(trial, reason)
            raise optuna.TrialPruned(reason)
        if self.multi:
            return m["val_acc"], float(m["params"])
        return m["val_acc"]

    def _save(self, number: int, recipe: Recipe, metrics: dict, history: list) -> None:
        d = self.ctx.cfg.study_dir / "trials" / str(number)
        atomic_write_text(d / "metrics.json", json.dumps({"metrics": metrics, "history": history}, indent=1))
        recipe.dump(d / "recipe.yaml")
