"""Prescreening: prune a trial BEFORE training when its zero-cost proxy score is hopeless.

A trial whose score falls below the running ``1 - keep`` quantile of the scores seen so far (once at least
``warmup`` trials have been scored) is pruned. The history lives in the study — every scored trial keeps
its score in the ``proxy_score`` user attribute, pruned or not — so it survives a resume and is shared by
several workers. Wiring in an objective::

    pre = Prescreen.from_study(study, cfg.search.prescreen, batch)         # once
    s = pre.score(recipe, None, teacher)
    trial_record.record_proxy(trial, s)
    prune, reason = pre.decide(s, Prescreen.study_history(trial.study, exclude=trial.number))
    if prune:
        trial_record.record_pruned(trial, reason, epochs=0)
        raise optuna.TrialPruned(reason)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import models
from ..errors import ConfigError
from . import trial_record

__all__ = ["Prescreen", "decide", "history_from_study"]


def decide(score: float, history: Sequence[float], *, keep: float, warmup: int,
           proxy: str = "proxy") -> tuple[bool, str]:
    """Pure decision rule: prune iff ``len(history) >= warmup`` and ``score`` is strictly below the
    ``1 - keep`` quantile (numpy's linear interpolation) of ``history`` (the scores of OTHER trials).

    ``keep = 1`` never prunes; a non-finite ``score`` is pruned once warm (it cannot be ranked).
    Returns ``(prune, reason)``; the reason says why either way.
    """
    hist = [float(h) for h in history if h is not None and math.isfinite(float(h))]
    if len(hist) < warmup:
        return False, f"warm-up: {len(hist)} of {warmup} scored trials"
    if not hist:
        return False, "no scored trial to compare with yet"
    if keep >= 1:
        return False, "keep = 1: prescreening never prunes"
    q = 1.0 - keep
    threshold = float(np.quantile(np.asarray(hist, dtype=float), q))
    if not math.isfinite(score):
        return True, f"{proxy} score {score} is not finite"
    if score < threshold:
        return True, (f"prescreen: {proxy} score {score:.6g} < {q:.3g}-quantile {threshold:.6g} of "
                      f"{len(hist)} scored trials (keep {keep:g})")
    return False, (f"{proxy} score {score:.6g} >= {q:.3g}-quantile {threshold:.6g} of "
                   f"{len(hist)} scored trials")


def history_from_study(study, exclude: int | Iterable[int] | None = None) -> list[float]:
    """The ``proxy_score`` of every trial of ``study`` that has one (any state but FAIL), by trial number,
    leaving out the trial number(s) in ``exclude`` (the trial being decided)."""
    import optuna

    skip = {exclude} if isinstance(exclude, int) else set(exclude or ())
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.number in skip or t.state == optuna.trial.TrialState.FAIL:
            continue
        v = trial_record.proxy_score_of(t)
        if v is not None:
            out.append(v)
    return out


class Prescreen:
    """Scores a trial's student with proxy ``proxy_name`` on ONE fixed labelled ``batch=(x, y)`` and decides
    whether to prune it (see :func:`decide`). ``history`` seeds the scores seen so far."""

    def __init__(self, proxy_name: str, keep: float, warmup: int, batch: tuple[Tensor, Tensor], *,
                 history: Iterable[float] = (), num_classes: int | None = None) -> None:
        from .. import proxies

        self.proxy_name = proxies.PROXIES.canonical(proxy_name, where="search.prescreen.proxy")
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ConfigError(f"search.prescreen.keep: must be in (0, 1], got {keep!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"search.prescreen.warmup: must be an integer >= 0, got {warmup!r}")
        if batch is None or len(batch) < 2 or batch[0].shape[0] < 2:
            raise ConfigError("search.prescreen: needs one labelled batch (x, y) of at least 2 samples")
        self.proxy = proxies.create(self.proxy_name)
        self.needs_teacher = proxies.needs_teacher(self.proxy_name)
        self.keep = float(keep)
        self.warmup = int(warmup)
        self.batch = (batch[0], batch[1])
        self.history: list[float] = [float(h) for h in history]
        self.num_classes = num_classes

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_study(cls, study, spec, batch: tuple[Tensor, Tensor], *,
                   num_classes: int | None = None) -> Prescreen:
        """A prescreen configured by ``spec`` (:class:`~autokd.config.PrescreenSpec`) whose history is the
        ``proxy_score`` of the study's existing trials (resume, several workers)."""
        return cls(spec.proxy, spec.keep, spec.warmup, batch, history=history_from_study(study),
                   num_classes=num_classes)

    @classmethod
    def for_context(cls, ctx, spec, study=None, *, seed: int | None = None) -> Prescreen:
        """From a :class:`~autokd.context.StudyContext`: ONE batch of ``spec.batch_size`` training images
        (shuffled with the study's seed), on the trainer's device."""
        from ..proxies import proxy_batch

        x, y = proxy_batch(ctx.data, spec.batch_size, seed=ctx.cfg.seed if seed is None else seed)
        batch = (x.to(ctx.device), y.to(ctx.device))
        hist = history_from_study(study) if study is not None else []
        return cls(spec.proxy, spec.keep, spec.warmup, batch, history=hist, num_classes=ctx.data.num_classes)

    @staticmethod
    def study_history(study, exclude: int | Iterable[int] | None = None) -> list[float]:
        """:func:`history_from_study`: the scores of the study's trials, minus ``exclude``."""
        return history_from_study(study, exclude)

    # ---- scoring and deciding ------------------------------------------------------------------
    def score(self, recipe: Any, student: nn.Module | None, teacher: nn.Module | None) -> float:
        """The proxy score of ``student`` — or, when ``student`` is None, of ``recipe``'s student built and
        initialised exactly as the trainer will (``torch.manual_seed(recipe.seed)``). Seeded with
        ``recipe.seed``; the caller's RNG and model are left untouched."""
        seed = int(getattr(recipe, "seed", 0) or 0)
        x = self.batch[0]
        if student is None:
            num_classes = self.num_classes
            if num_classes is None and teacher is not None:
                from ..proxies.base import teacher_outputs

                num_classes = int(teacher_outputs(teacher, x[:2]).logits.shape[1])
            if num_classes is None:
                raise ConfigError("prescreen: cannot build the student without num_classes (or a teacher)")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                student = models.from_spec(recipe.student, num_classes, int(x.shape[1]))
            student = student.to(x.device)
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"search.prescreen.proxy: {self.proxy_name!r} needs the teacher")
        return self.proxy(student, teacher, self.batch, seed=seed)

    def decide(self, score: float, history: Sequence[float] | None = None) -> tuple[bool, str]:
        """:func:`decide` against ``history`` (default: this prescreen's own). Pure: records nothing."""
        hist = self.history if history is None else history
        return decide(score, hist, keep=self.keep, warmup=self.warmup, proxy=self.proxy_name)

    def observe(self, score: float) -> None:
        """Append a score to this prescreen's own history (single-process use without a study)."""
        self.history.append(float(score))

    def __call__(self, recipe: Any, student: nn.Module | None, teacher: nn.Module | None,
                 history: Sequence[float] | None = None) -> tuple[float, bool, str]:
        """Score, then decide: ``(score, prune, reason)``. Records nothing."""
        s = self.score(recipe, student, teacher)
        return (s, *self.decide(s, history))
