"""Is the study's teacher distillable? The student baseline trained CE-only and with plain KD from the
teacher over paired seeds, the paired difference with a 95 % t-interval, a verdict and its reasons.

A teacher is called *undistillable* when KD underperforms CE-only by more than seed noise: the whole 95 %
interval of the paired difference (KD − CE-only, same seed) lies below zero. The reasons come from the
teacher's softened outputs on the validation split at the KD temperature, compared with the CE-only students
(normally trained references; the same statistics between two CE-only seeds give the scale of noise): its
"dark knowledge" (the distribution over the non-target classes: KL, and whether its most probable wrong class
is theirs), how many classes it spreads mass over (a nasty teacher's outputs are multi-peaked) and accuracy.
Accuracies are validation accuracies: a check that picks teachers must not read the test split.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from . import stats
from .recipe import Recipe
from .retrain import baselines_for

if TYPE_CHECKING:
    from .context import StudyContext

__all__ = ["PairedDifference", "paired_difference", "verdict_of", "softened_diagnostics", "TeacherCheck",
           "check_teacher"]

UNDISTILLABLE, DISTILLABLE, NO_CLEAR_EFFECT, INCONCLUSIVE = "undistillable", "distillable", "no clear effect", \
    "inconclusive"


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-seed differences ``a_s − b_s``, their sample std and a two-sided t-interval."""

    mean: float
    sd: float
    n: int
    low: float
    high: float
    confidence: float = 0.95


def paired_difference(a: list[float], b: list[float], confidence: float = 0.95) -> PairedDifference:
    """:func:`autokd.stats.paired_difference` of ``a − b`` (``mean(d) ± t_{(1+c)/2, n−1} · sd(d)/√n`` over the
    per-seed differences) as a :class:`PairedDifference`; the interval is unbounded for n < 2."""
    d = stats.paired_difference(a, b, confidence=confidence)
    low = -math.inf if d["low"] is None else d["low"]
    high = math.inf if d["high"] is None else d["high"]
    return PairedDifference(d["mean"], d["std"] or 0.0, d["n"], low, high, confidence)


def verdict_of(diff: PairedDifference) -> str:
    """``undistillable`` (interval below 0), ``distillable`` (above 0), ``no clear effect`` (contains 0) or
    ``inconclusive`` (fewer than 2 seeds)."""
    if diff.n < 2:
        return INCONCLUSIVE
    if diff.high < 0:
        return UNDISTILLABLE
    if diff.low > 0:
        return DISTILLABLE
    return NO_CLEAR_EFFECT


def _nontarget_log_probs(logits: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax over the non-target classes of ``logits / T`` (the true class masked out): the "dark
    knowledge" of a prediction (DKD's non-target distribution). The true class's entry is −inf."""
    z = logits.float() / temperature
    return F.log_softmax(z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")), 1)


def _kl(a: torch.Tensor, b: torch.Tensor) -> float:
    """Batch-mean KL(exp(a) ‖ exp(b)) of log-probabilities; classes where ``a`` is −inf contribute 0."""
    terms = a.exp() * (a - b)
    return float(torch.where(torch.isfinite(a), terms, torch.zeros_like(terms)).sum(1).mean())


@torch.no_grad()
def softened_diagnostics(teacher: nn.Module, references: list[nn.Module], loader, device,
                         temperature: float) -> dict[str, float]:
    """What a student would learn from ``softmax(teacher/T)`` over ``loader``, beside normally trained
    ``references`` (the CE-only students):

    - ``teacher_acc``; ``true_class_mass``: mean softened probability of the true class;
    - ``peaks``: mean number of classes above 1/K (a nasty teacher's outputs are multi-peaked);
    - ``agreement``: top-1 agreement with the references;
    - ``nontarget_kl``: KL between the teacher's and each reference's softened distribution over the non-target
      classes (renormalised), averaged; ``dark_agreement``: how often the teacher's most probable wrong class
      is a reference's (chance: 1/(K−1));
    - ``reference_peaks``, and with two or more references ``reference_nontarget_kl`` and
      ``reference_dark_agreement``: the same between pairs of references (the scale of seed noise).
    """
    models = [teacher, *references]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    logits: list[list[torch.Tensor]] = [[] for _ in models]
    ys = []
    for x, y, _ in loader:
        x = x.to(device)
        ys.append(y.to(device))
        for k, m in enumerate(models):
            logits[k].append(m(x).float())
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    y = torch.cat(ys)
    z = [torch.cat(parts) for parts in logits]
    k = z[0].shape[1]
    p = [F.softmax(v / temperature, 1) for v in z]
    nt = [_nontarget_log_probs(v, y, temperature) for v in z]
    dark = [v.argmax(1) for v in nt]

    def peaks(q: torch.Tensor) -> float:
        return float((q > 1.0 / k).sum(1).float().mean())

    out = {"teacher_acc": float((z[0].argmax(1) == y).float().mean()),
           "true_class_mass": float(p[0].gather(1, y.view(-1, 1)).mean()), "peaks": peaks(p[0])}
    if references:
        out["agreement"] = statistics.fmean(float((z[0].argmax(1) == r.argmax(1)).float().mean()) for r in z[1:])
        out["nontarget_kl"] = statistics.fmean(_kl(nt[0], r) for r in nt[1:])
        out["dark_agreement"] = statistics.fmean(float((dark[0] == d).float().mean()) for d in dark[1:])
        out["reference_peaks"] = statistics.fmean(peaks(q) for q in p[1:])
    if len(references) > 1:
        pairs = [(i, j) for i in range(1, len(z)) for j in range(i + 1, len(z))]
        out["reference_nontarget_kl"] = statistics.fmean(_kl(nt[i], nt[j]) for i, j in pairs)
        out["reference_dark_agreement"] = statistics.fmean(float((dark[i] == dark[j]).float().mean())
                                                           for i, j in pairs)
    return out


@dataclass
class TeacherCheck:
    seeds: list[int]
    epochs: int
    temperature: float
    ce_only: list[float]
    kd: list[float]
    difference: PairedDifference
    verdict: str
    diagnostics: dict[str, float] = field(default_factory=dict)
    recipes: dict[str, Any] = field(default_factory=dict)

    def reasons(self) -> list[str]:
        """What in the teacher's softened outputs differs from normally trained models (beyond seed noise)."""
        g, out = self.diagnostics, []
        if g.get("nontarget_kl", 0.0) > 2 * g.get("reference_nontarget_kl", math.inf):
            out.append("its dark knowledge (the softened non-target classes) is far from a normally trained "
                       "model's")
        if g.get("dark_agreement", 1.0) < 0.5 * g.get("reference_dark_agreement", 0.0):
            out.append("its most probable wrong class rarely matches a normally trained model's")
        if g.get("peaks", 0.0) > 1.25 * g.get("reference_peaks", math.inf):
            out.append("its softened outputs are multi-peaked")
        return out

    def explanation(self) -> list[str]:
        """The verdict in plain words, then why."""
        d, g = self.difference, self.diagnostics
        interval = f"95% interval [{d.low:+.2%}, {d.high:+.2%}] over {d.n} paired seeds"
        if self.verdict == INCONCLUSIVE:
            lines = [f"inconclusive: one seed gives no noise estimate (KD − CE-only = {d.mean:+.2%}); use --seeds 3 "
                     "or more"]
        elif self.verdict == UNDISTILLABLE:
            lines = [f"undistillable: KD from this teacher underperforms CE-only by {-d.mean:.2%} ({interval}), "
                     "more than seed noise"]
        elif self.verdict == DISTILLABLE:
            lines = [f"distillable: KD from this teacher beats CE-only by {d.mean:.2%} ({interval})"]
        else:
            lines = [f"no clear effect: KD − CE-only = {d.mean:+.2%} ({interval}) is within seed noise; the teacher "
                     "is not shown to be undistillable (more seeds narrow the interval)"]
        why = [f"teacher val acc {g['teacher_acc']:.2%}", f"softened mass on the true class "
               f"{g['true_class_mass']:.2f}", f"{g['peaks']:.2f} classes above 1/K"]
        if "nontarget_kl" in g:
            why[-1] += f" (CE-only students: {g['reference_peaks']:.2f})"
            ref_kl = (f" (between CE-only seeds: {g['reference_nontarget_kl']:.3f})"
                      if "reference_nontarget_kl" in g else "")
            ref_agree = (f" (between CE-only seeds: {g['reference_dark_agreement']:.2%})"
                         if "reference_dark_agreement" in g else "")
            why += [f"non-target KL to the CE-only students {g['nontarget_kl']:.3f}{ref_kl}",
                    f"most probable wrong class shared with them {g['dark_agreement']:.2%}{ref_agree}",
                    f"top-1 agreement {g['agreement']:.2%}"]
        if self.verdict == UNDISTILLABLE:
            lines.append("why: " + "; ".join(self.reasons() or ["its softened outputs mislead the student"])
                         + " — " + ", ".join(why))
        else:
            lines.append("teacher: " + ", ".join(why))
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "epochs": self.epochs, "temperature": self.temperature,
                "val_acc": {"ce_only": self.ce_only, "kd": self.kd},
                "difference": self.difference.__dict__, "verdict": self.verdict, "diagnostics": self.diagnostics,
                "recipes": self.recipes}


def check_teacher(ctx: StudyContext, recipe: Recipe, *, seeds: int = 3, epochs: int | None = None,
                  temperature: float = 4.0, kd_weight: float = 0.9, ce_weight: float = 0.1,
                  log=print) -> TeacherCheck:
    """Train ``recipe``'s student CE-only and with plain KD (``ce_weight`` CE + ``kd_weight`` KD at
    ``temperature``) from ``ctx``'s teacher for seeds ``0..seeds−1`` and judge the teacher."""
    if ctx.teacher is None:
        raise ValueError("check_teacher needs a study context with its teacher")
    base = recipe.model_copy(deep=True)
    if epochs:
        base.optim.epochs = int(epochs)
    runs = baselines_for(base, temperature=temperature, kd_weight=kd_weight, ce_weight=ce_weight)
    acc: dict[str, list[float]] = {"ce_only": [], "kd": []}
    references = []
    for seed in range(seeds):
        for label, r in runs.items():
            fit = ctx.trainer.fit(r.with_seed(seed), measure=False)
            acc[label].append(float(fit.metrics["val_acc"]))
            if label == "ce_only":
                references.append(fit.student)
            log(f"teacher check: {label:8s} seed {seed}: val acc {acc[label][-1]:.4f}")
    diff = paired_difference(acc["kd"], acc["ce_only"])
    diagnostics = softened_diagnostics(ctx.teacher, references, ctx.data.loader("val", 512, shuffle=False),
                                       ctx.device, temperature)
    return TeacherCheck(seeds=list(range(seeds)), epochs=base.optim.epochs, temperature=temperature,
                        ce_only=acc["ce_only"], kd=acc["kd"], difference=diff, verdict=verdict_of(diff),
                        diagnostics=diagnostics, recipes={k: r.to_dict() for k, r in runs.items()})
