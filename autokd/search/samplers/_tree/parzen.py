"""The tree samplers' model of a numeric parameter on [0, 1]: a TPE-style Parzen estimator over weighted
observations (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011)."""

from __future__ import annotations

import bisect
import math

import numpy as np

__all__ = ["normal_cdf", "parzen_pick"]

_SQRT2 = math.sqrt(2.0)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF, elementwise: ``erfc(-z / sqrt 2) / 2`` (no cancellation in either tail)."""
    z = np.asarray(z, dtype=float)
    args = (-z / _SQRT2).ravel().tolist()  # the same IEEE operations elementwise, then math.erfc on each
    return (0.5 * np.fromiter(map(math.erfc, args), dtype=float, count=z.size)).reshape(z.shape)


def _bandwidth(pts: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Scott's rule on the weighted points, floored at 1/(1+m) of the range (the "magic clip" of Bergstra
    et al.) and capped at 0.5; also returns ``m``, the effective number of observations. (Weighted means
    are written out as ``np.average`` computes them: ``(a * w).sum() / w.sum()``.)"""
    sw = w.sum()
    m = float(sw ** 2 / (w * w).sum())
    mean = float((pts * w).sum() / sw)
    sigma = math.sqrt(float(((pts - mean) ** 2 * w).sum() / sw)) if len(pts) > 1 else 0.5
    return float(min(max(1.06 * sigma * m ** -0.2, 1.0 / min(100.0, 1.0 + m)), 0.5)), m  # np.clip's order


def _logpdf(x: np.ndarray, pts: np.ndarray, w: np.ndarray, bandwidth: tuple[float, float] | None = None
            ) -> np.ndarray:
    """Log density at ``x`` of a uniform prior (weight 1/(m+1)) mixed with Gaussian windows truncated to
    [0, 1], one per point, weighted by ``w`` (``bandwidth``: :func:`_bandwidth` of the points, if known)."""
    h, m = bandwidth or _bandwidth(pts, w)
    w0 = 1.0 / (m + 1.0)
    n = len(pts)
    cdf = normal_cdf(np.concatenate([(1.0 - pts) / h, -pts / h]))
    mass = cdf[:n] - cdf[n:]
    dens = np.subtract(x[:, None], pts[None, :])  # the windows' exponents, then densities, in place
    dens /= h
    np.multiply(dens, dens * -0.5, out=dens)
    np.exp(dens, out=dens)
    dens /= h * math.sqrt(2 * math.pi) * mass[None, :]
    dens *= (w / w.sum())[None, :]
    return np.log(w0 + (1 - w0) * dens.sum(axis=1))


def parzen_pick(xs: np.ndarray, qs: np.ndarray, ws: np.ndarray, rng: np.random.RandomState, gamma: float,
                n_candidates: int) -> float:
    """TPE's choice on [0, 1] from observations ``xs`` with qualities ``qs`` (higher is better) and weights
    ``ws`` (at least two observations).

    The best observations holding a ``gamma`` share of the weight form the "good" density l, the rest g
    (each side keeps at least one); each is a weighted mixture of truncated-Gaussian Parzen windows plus a
    uniform prior. ``n_candidates`` draws from l (a window's Gaussian resampled up to 20 times until it
    lands in [0, 1], else clipped) compete, and the one maximising l(x) / g(x) is returned.
    """
    order = np.argsort(-qs, kind="stable")
    xs, qs, ws = xs[order], qs[order], ws[order]
    cum = np.cumsum(ws)
    n_good = int(np.searchsorted(cum, gamma * cum[-1], side="left")) + 1
    n_good = min(max(1, n_good), len(xs) - 1)
    good, bad = (xs[:n_good], ws[:n_good]), (xs[n_good:], ws[n_good:])

    h, m = bandwidth = _bandwidth(*good)
    p = good[1] / good[1].sum()
    cdf = p.cumsum()  # a window drawn as rng.choice(len(p), p=p) draws it: the same variate, the same index
    cdf /= cdf[-1]
    cdf_list, good_x, prior = cdf.tolist(), good[0].tolist(), 1.0 / (m + 1.0)
    # rng.uniform() is 0.0 + 1.0 * rng.random_sample(): the same value; random_sample has less call overhead
    picks: list[float] = []
    for _ in range(n_candidates):
        if rng.random_sample() < prior:
            picks.append(rng.random_sample())
            continue
        mu = good_x[bisect.bisect_right(cdf_list, rng.random_sample())]
        x = mu
        for _ in range(20):
            x = rng.normal(mu, h)
            if 0.0 <= x <= 1.0:
                break
        picks.append(min(1.0, max(0.0, x)))
    cands = np.array(picks, dtype=float)
    score = _logpdf(cands, *good, bandwidth) - _logpdf(cands, *bad)
    return float(cands[int(np.argmax(score))])
