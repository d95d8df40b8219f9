"""Zero-cost proxies: score an untrained student from ONE labelled batch, higher = predicted better.

>>> from autokd import proxies
>>> proxies.create("naswot")(student, teacher, (x, y))          # -> float
>>> proxies.names()

Every proxy works on a private copy of the student (weights, BN statistics, grads and modes of the
caller's model are never touched) under a forked RNG seeded with ``seed`` (default 0). Teacher-free
proxies ignore ``teacher``. Per proxy (sign = what "higher" means; BN = the student's BN mode):

==================  ==============================================================  =============
name                score (higher = predicted better)                               student BN
==================  ==============================================================  =============
diswot              -(semantic distance + relation distance) to the teacher         train
diswot_semantic     -‖Gram(∂CE/∂W_cls)_s - Gram(∂CE/∂W_cls)_t‖ (class × class)       train
diswot_relation     -‖SP Gram_s - SP Gram_t‖ (batch × batch, last stage)             train
kd_ridge            LOO R² of ridge on student features -> teacher soft targets     train
naswot              log|det K_H| of ReLU codes                                      train
jacob_cov           -Σ log(λ+k) + 1/(λ+k) of the input-Jacobian correlation         train
snip                Σ |θ ⊙ ∂L/∂θ|                                                   train
grasp               Σ -θ ⊙ Hg (Abdelfattah et al.'s sign)                           train
grad_norm           Σ_layers ‖∂L/∂W‖                                                train
fisher              Σ_channels ½ mean_n (Σ_hw a ⊙ ∂L/∂a)²                            train
synflow             Σ |θ ⊙ ∂R/∂θ|, R = 1ᵀ f_|θ|(1), float64                          removed
zen                 log E‖f(x) - f(x + αε)‖ + Σ_BN log σ                             train
params              parameter count (bigger = better)                               n/a
flops               FLOPs per image (bigger = better)                               eval
==================  ==============================================================  =============
"""

from __future__ import annotations

from typing import Any

from . import diswot, gradient, kd_ridge, naswot, size, synflow, zen  # noqa: F401  (register the proxies)
from .base import PROXIES, Proxy, proxy_batch
from .score import build_student, score_student

__all__ = [
    "PROXIES",
    "Proxy",
    "create",
    "names",
    "needs_teacher",
    "proxy_batch",
    "score_student",
    "build_student",
]


def create(name: str, **kwargs: Any) -> Proxy:
    """The proxy called ``name`` (unknown names raise :class:`~autokd.errors.UnknownNameError` listing close
    matches); ``kwargs`` override its class attributes (e.g. ``create("kd_ridge", temperature=2.0)``)."""
    from ..errors import ConfigError

    cls = PROXIES.get(name, where="proxy")
    proxy = cls()
    for k, v in kwargs.items():
        if k.startswith("_") or not hasattr(cls, k) or callable(getattr(cls, k)):
            raise ConfigError(f"proxy {name!r} has no option {k!r}")
        setattr(proxy, k, v)
    return proxy


def names() -> list[str]:
    return PROXIES.names()


def needs_teacher(name: str) -> bool:
    return bool(PROXIES.meta(name).get("needs_teacher", False))
