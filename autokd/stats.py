"""Small, dependency-free statistics for the evidence a study shows: the paired Student-t interval of a recipe's
gain over a baseline across seeds, and the teacher-student fidelity measures of Stanton et al. (NeurIPS 2021).

Pure Python (numpy only inside the fidelity functions, imported on call); no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["student_t_cdf", "t_quantile", "paired_difference", "verdict", "top1_agreement", "predictive_kl"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with ``dof`` degrees of freedom: 1 - I_{v/(v+t²)}(v/2, 1/2) / 2 for t >= 0."""
    if dof <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {dof}")
    tail = 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, dof: float) -> float:
    """The ``p`` quantile of Student's t (e.g. ``t_quantile(0.975, 4) = 2.7764``), by bisection on the CDF."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, dof) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def verdict(low: float | None, high: float | None, baseline: str) -> str:
    """Plain words for a paired interval of (recipe - baseline)."""
    if low is None or high is None:
        return "one seed: no interval"
    if low > 0:
        return f"better than {baseline}"
    if high < 0:
        return f"worse than {baseline}"
    return "within noise"


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                      baseline: str = "baseline") -> dict[str, Any]:
    """Mean of the per-seed differences ``a[i] - b[i]`` with its Student-t interval (n-1 degrees of freedom).

    Seeds are paired (run i of ``a`` and of ``b`` share a seed), so the seed-to-seed variation common to both
    cancels. Returns ``{n, mean, std (of the differences), sem, t, low, high, confidence, verdict}``; with one
    seed the interval is ``None``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired samples are empty")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    out: dict[str, Any] = {"n": n, "mean": mean, "std": None, "sem": None, "t": None, "low": None, "high": None,
                           "confidence": confidence}
    if n > 1:
        std = statistics.stdev(diffs)
        sem = std / math.sqrt(n)
        t = t_quantile(0.5 + confidence / 2.0, n - 1)
        out.update(std=std, sem=sem, t=t, low=mean - t * sem, high=mean + t * sem)
    out["verdict"] = verdict(out["low"], out["high"], baseline)
    return out


def _log_softmax(z: Any) -> Any:
    import numpy as np

    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def top1_agreement(student_logits: Any, teacher_logits: Any) -> float:
    """Stanton et al. (2021): mean over examples of [argmax_j s_j == argmax_j t_j]."""
    import numpy as np

    s, t = np.asarray(student_logits), np.asarray(teacher_logits)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"logits must be (N, K) of equal shape, got {s.shape} and {t.shape}")
    return float((s.argmax(axis=1) == t.argmax(axis=1)).mean())


def predictive_kl(teacher_logits: Any, student_logits: Any) -> float:
    """Stanton et al. (2021): mean over examples of KL(p_t || p_s) = sum_j p_t,j (log p_t,j - log p_s,j), with
    softmax at temperature 1 (natural log, nats)."""
    import numpy as np

    lt, ls = _log_softmax(teacher_logits), _log_softmax(student_logits)
    if lt.shape != ls.shape:
        raise ValueError(f"logits must have equal shapes, got {lt.shape} and {ls.shape}")
    return float((np.exp(lt) * (lt - ls)).sum(axis=1).mean())
