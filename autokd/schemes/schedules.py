"""Schemes that only re-weight the distillation terms over training (through ``term_scales``)."""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..hparams import HParam
from .base import Scheme, register

__all__ = ["ESKD", "WeightSchedule", "stop_epoch", "schedule_scale"]


def stop_epoch(stop_fraction: float, total_epochs: int) -> int:
    """First epoch (0-based) without distillation: ``round(stop_fraction × total)``, at least 1."""
    return max(1, round(stop_fraction * total_epochs))


@register
class ESKD(Scheme):
    """Early-stopped KD (Cho & Hariharan, ICCV 2019, "On the Efficacy of Knowledge Distillation").

    The paper finds that a small student cannot mimic a large teacher to the end of training and that
    stopping distillation early helps; here every distillation term is multiplied by 1 for epochs
    ``< stop_epoch = max(1, round(stop_fraction × epochs))`` and by exactly 0 afterwards (training goes on
    with the task loss only; the teacher is then not even run).
    """

    name = "eskd"
    paper = "Cho & Hariharan, ICCV 2019, On the Efficacy of Knowledge Distillation"
    hparams = {
        "stop_fraction": HParam(0.5, 0.1, 0.9, doc="fraction of the epochs trained with the distillation terms"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if not 0.0 < self.params["stop_fraction"] <= 1.0:
            raise ConfigError(f"scheme 'eskd': stop_fraction must be in (0, 1], got {self.params['stop_fraction']}")

    def term_scales(self, epoch: int, total_epochs: int, keys: list[str]) -> dict[str, float]:
        if epoch >= stop_epoch(self.params["stop_fraction"], total_epochs):
            return {k: 0.0 for k in keys}
        return {}


def schedule_scale(mode: str, epoch: int, total_epochs: int, warmup_fraction: float, final_scale: float) -> float:
    """The multiplier of a term at (0-based) ``epoch``:

    - ``constant``: 1;
    - ``linear`` warm-up (DKD's ``min(epoch / warmup, 1)`` with 1-based epochs): ``min(1, (epoch + 1) / W)``,
      ``W = max(1, round(warmup_fraction × total))``;
    - ``cosine`` anneal from 1 (first epoch) to ``final_scale`` (last epoch):
      ``final + (1 - final) · ½ (1 + cos(π · epoch / (total - 1)))``.
    """
    if mode == "constant":
        return 1.0
    if mode == "linear":
        warm = max(1, round(warmup_fraction * total_epochs))
        return min(1.0, (epoch + 1) / warm)
    if mode == "cosine":
        p = epoch / max(1, total_epochs - 1)
        return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))
    raise ConfigError(f"scheme 'weight_schedule': mode must be constant, linear or cosine; got {mode!r}")


@register
class WeightSchedule(Scheme):
    """Per-term weight ramps over the epochs (the warm-up of DKD, Zhao et al. CVPR 2022, and annealed
    distillation weights as in Annealing-KD, Jafari et al. EACL 2021).

    ``mode``: ``constant`` | ``linear`` (warm-up over ``warmup_fraction`` of the epochs) | ``cosine``
    (anneal to ``final_scale``); see :func:`schedule_scale`. ``terms``: ``"all"`` or the term keys (a list
    or a comma-separated string, e.g. ``"kd,at"``) that follow the ramp; the others keep scale 1.
    """

    name = "weight_schedule"
    paper = "- (DKD warm-up, Zhao et al. CVPR 2022; annealing)"
    hparams = {
        "mode": HParam("linear", choices=("constant", "linear", "cosine"), kind="categorical"),
        "warmup_fraction": HParam(0.2, 0.05, 0.5, doc="linear: fraction of the epochs to reach full weight"),
        "final_scale": HParam(0.0, 0.0, 1.0, doc="cosine: the scale reached at the last epoch"),
        "terms": HParam("all", kind="categorical", doc='"all" or the keys of the terms to schedule'),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        if not 0.0 < p["warmup_fraction"] <= 1.0:
            raise ConfigError(f"scheme 'weight_schedule': warmup_fraction must be in (0, 1], got {p['warmup_fraction']}")
        if p["final_scale"] < 0:
            raise ConfigError(f"scheme 'weight_schedule': final_scale must be >= 0, got {p['final_scale']}")
        terms = p["terms"]
        if isinstance(terms, str):
            terms = [t.strip() for t in terms.split(",") if t.strip()]
        if not isinstance(terms, list | tuple) or not terms or not all(isinstance(t, str) for t in terms):
            raise ConfigError(f"scheme 'weight_schedule': terms must be 'all' or a list of term keys, got {terms!r}")
        self._terms = None if list(terms) == ["all"] else list(terms)

    def setup(self, *, distiller=None, **context) -> None:
        if self._terms is not None and distiller is not None:
            keys = [t.key for t in distiller.terms]
            unknown = [k for k in self._terms if k not in keys]
            if unknown:
                raise ConfigError(f"scheme 'weight_schedule': terms: no term {unknown[0]!r} in the recipe; "
                                  f"its terms are {', '.join(keys) or 'none'}")

    def term_scales(self, epoch: int, total_epochs: int, keys: list[str]) -> dict[str, float]:
        p = self.params
        s = schedule_scale(p["mode"], epoch, total_epochs, p["warmup_fraction"], p["final_scale"])
        return {k: s for k in keys if self._terms is None or k in self._terms}
