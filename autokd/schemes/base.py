"""Training schemes change the loop, not the loss, through the hooks of :class:`Scheme`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam, resolve
from ..outputs import Outputs
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

    A scheme changes the trainer's loop only through these hooks (the trainer has no per-scheme branches);
    the trainer calls them in this order:

    - ``setup(**context)`` once, before training (context: ``distiller``, ``recipe``, ``data``, ``device``,
      ``epochs``, ``teacher``, ``teacher_source``, ``cache_dir``, ``trainer``). Runs under a forked RNG, so
      helpers trained or loaded here (TAKD's assistant, BAN's generations) never change the student's run.
    - ``wrap_loader(loader)`` once: the training batches ``(x, y, idx)``; ``len()`` = the steps of the coming
      epoch (read at each epoch's start; it may change between epochs, as KCD's condensed set: the learning-rate
      schedule follows epochs, not a fixed step count).
    - ``extra_parameters()``: parameters of helper models the default optimiser also updates (DML's peers).
    - ``build_optimizer(distiller, optim)`` once, then ``inference_model(model)`` once: the model evaluated each
      epoch and exported, given the distiller's (the student or a term's wrapper, e.g. SimKD's); a scheme whose
      student needs its helpers at inference (SLA's rotation aggregation, ResKD's res-student) wraps it here.
    - per epoch: ``term_scales(epoch, total, keys)`` (per-term multiplier; 0 switches a term off for the
      epoch), then ``on_epoch_start(epoch, total, steps_per_epoch)``;
    - per step: ``teacher_outputs(x, idx, default)`` (only when a term is active; ``default()`` returns
      the teacher source's outputs), the distiller's :class:`~autokd.distiller.Step` (losses + the student's
      outputs: its whole :class:`~autokd.outputs.Outputs`, stage features included, when the class attribute
      ``student_outputs`` is true), ``extra_losses(x, y, idx, step)`` (weighted tensors added to ``"loss"``
      and, unless their key is in ``helper_loss_keys``, to ``"distill"``),
      ``backward_step(losses, optimizer)``, the LR-scheduler step, ``after_step()``;
    - ``on_epoch_end(epoch, total)``.
    """

    name: ClassVar[str] = "standard"
    paper: ClassVar[str] = "-"
    hparams: ClassVar[dict[str, HParam]] = {}
    #: keys of ``extra_losses`` that train helper models (added to ``"loss"`` but not to ``"distill"``)
    helper_loss_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when ``extra_losses`` reads the student's stage features / embedding from ``step.student``
    student_outputs: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = resolve(self.hparams, params, f"scheme {self.name!r}")

    # -- hooks ----------------------------------------------------------------------------------
    def setup(self, **context: Any) -> None:
        pass

    def wrap_loader(self, loader: Any) -> Iterable[tuple[Tensor, Tensor, Tensor]]:
        return loader

    def extra_parameters(self) -> list[nn.Parameter]:
        return []

    def build_optimizer(self, distiller: nn.Module, optim) -> torch.optim.Optimizer:
        return make_optimizer(list(distiller.trainable_parameters()) + list(self.extra_parameters()), optim)

    def inference_model(self, model: nn.Module) -> nn.Module:
        return model

    def term_scales(self, epoch: int, total_epochs: int, keys: list[str]) -> dict[str, float]:
        return {}

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        pass

    def teacher_outputs(self, x: Tensor, idx: Tensor, default: Callable[[], Outputs | None]) -> Outputs | None:
        return default()

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        return {}

    def backward_step(self, losses: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    def after_step(self) -> None:
        pass

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


def register(cls: type[Scheme]) -> type[Scheme]:
    if not cls.__doc__:
        raise ValueError(f"{cls.__name__} needs a docstring citing its paper")
    SCHEMES.add(cls.name, cls, paper=cls.paper)
    return cls


register(Scheme)
