"""Training schemes change the loop, not the loss, through the hooks of :class:`Scheme`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["Scheme", "SCHEMES", "register", "make_optimizer"]

SCHEMES: Registry[type[Scheme]] = Registry("scheme")


def make_optimizer(params, optim) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW from an :class:`~autokd.recipe.OptimSpec`."""
    params = list(params)
    if optim.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optim.lr,
            momentum=optim.momentum,
            nesterov=optim.nesterov and optim.momentum > 0,
            weight_decay=optim.weight_decay,
        )
    if optim.name == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ConfigError(f"optim.name must be sgd or adamw, got {optim.name!r}")


class Scheme:
    """Base scheme (``standard``): loss = CE weight × CE + Σ term weight × term, one optimiser.

    Hooks a scheme may override (the trainer calls them and has no per-scheme branches):
    ``setup``, ``build_optimizer``, ``term_scales`` (per-term multiplier for an epoch),
    ``teacher_outputs`` (replace the teacher's outputs for a batch), ``backward_step``,
    ``on_epoch_end``.
    """

    name: ClassVar[str] = "standard"
    paper: ClassVar[str] = "-"
    params_spec: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.params_spec)
        if unknown:
            allowed = ", ".join(sorted(self.params_spec)) or "none"
            raise ConfigError(f"scheme {self.name!r} has no parameter {sorted(unknown)[0]!r}; allowed: {allowed}")
        self.params = {**{k: v.default for k, v in self.params_spec.items()}, **params}

    def setup(self, **context: Any) -> None:
        pass

    def build_optimizer(self, distiller: nn.Module, optim) -> torch.optim.Optimizer:
        return make_optimizer(distiller.trainable_parameters(), optim)

    def term_scales(self, epoch: int, total_epochs: int, keys: list[str]) -> dict[str, float]:
        return {}

    def backward_step(self, losses: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        pass


def register(cls: type[Scheme]) -> type[Scheme]:
    SCHEMES.add(cls.name, cls, paper=cls.paper)
    return cls


register(Scheme)
