"""Is the study's teacher distillable? The student baseline trained CE-only and with plain KD from the
teacher over paired seeds, the paired difference with a 95 % t-interval, a verdict and its reasons.

A teacher is called *undistillable* when KD underperforms CE-only by more than seed noise: the whole 95 %
interval of the paired difference (KD − CE-only, same seed) lies below zero. The reasons come from the
teacher's softened outputs on the validation split at the KD temperature, compared with the CE-only students
(normally trained references): how far they are from a normal model (KL, beside the KL between two CE-only
seeds as the noise scale), their entropy, the mass they leave on the true class and the top-1 agreement.
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
    """``mean(d) ± t_{(1+c)/2, n−1} · sd(d)/√n`` over ``d_s = a_s − b_s``; an unbounded interval for n < 2."""
    from scipy.stats import t as student_t

    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long non-empty lists, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    n, mean = len(d), statistics.fmean(d)
    if n < 2:
        return PairedDifference(mean, 0.0, n, -math.inf, math.inf, confidence)
    sd = statistics.stdev(d)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return PairedDifference(mean, sd, n, mean - half, mean + half, confidence)


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


@torch.no_grad()
def softened_diagnostics(teacher: nn.Module, references: list[nn.Module], loader, device,
                         temperature: float) -> dict[str, float]:
    """Statistics of ``softmax(teacher/T)`` over ``loader``: ``teacher_acc``, ``entropy`` (normalised by
    log K), ``true_class_mass``, ``kl_to_references`` (mean over references of the batch-mean
    KL(p_t ‖ p_ref) at T), ``agreement`` (top-1 agreement with the references) and, with two or more
    references, ``reference_kl`` (the same KL between pairs of references: the scale of seed noise)."""
    models = [teacher, *references]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    t = float(temperature)
    logps: list[list[torch.Tensor]] = [[] for _ in models]
    ys = []
    for x, y, _ in loader:
        x = x.to(device)
        ys.append(y.to(device))
        for k, m in enumerate(models):
            logps[k].append(F.log_softmax(m(x).float() / t, 1))
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    y = torch.cat(ys)
    lp = [torch.cat(parts) for parts in logps]
    k = lp[0].shape[1]

    def kl(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.exp() * (a - b)).sum(1).mean())

    out = {
        "teacher_acc": float((lp[0].argmax(1) == y).float().mean()),
        "entropy": float(-(lp[0].exp() * lp[0]).sum(1).mean() / math.log(k)),
        "true_class_mass": float(lp[0].exp().gather(1, y.view(-1, 1)).mean()),
    }
    if references:
        out["kl_to_references"] = statistics.fmean(kl(lp[0], r) for r in lp[1:])
        out["agreement"] = statistics.fmean(float((lp[0].argmax(1) == r.argmax(1)).float().mean()) for r in lp[1:])
        out["reference_entropy"] = statistics.fmean(float(-(r.exp() * r).sum(1).mean() / math.log(k))
                                                    for r in lp[1:])
    if len(references) > 1:
        out["reference_kl"] = statistics.fmean(kl(a, b) for i, a in enumerate(lp[1:]) for b in lp[i + 2:])
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
        why = [f"teacher val acc {g['teacher_acc']:.2%}"]
        if "kl_to_references" in g:
            ref = f" (between CE-only seeds: {g['reference_kl']:.3f})" if "reference_kl" in g else ""
            why.append(f"KL of its softened outputs (T={self.temperature:g}) to the CE-only students' "
                       f"{g['kl_to_references']:.3f}{ref}")
            why.append(f"top-1 agreement with them {g['agreement']:.2%}")
            why.append(f"normalised entropy {g['entropy']:.2f} (CE-only students: {g['reference_entropy']:.2f})")
        why.append(f"softened mass on the true class {g['true_class_mass']:.2f}")
        if self.verdict == UNDISTILLABLE and "kl_to_references" in g:
            far = "reference_kl" not in g or g["kl_to_references"] > 2 * g["reference_kl"]
            lines.append("why: " + ("its softened outputs are accurate at the top-1 but their dark knowledge is "
                                    "far from what a normally trained model predicts, so matching them misleads "
                                    "the student" if far else "its softened outputs mislead the student")
                         + "; " + ", ".join(why))
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
