"""The proxy registry and :class:`Proxy`, the base class of every zero-cost proxy.

A proxy scores an *untrained* student from ONE labelled batch: ``proxy(student, teacher, (x, y)) -> float``,
higher = predicted better. The base class owns the bookkeeping every proxy needs, so a proxy's
:meth:`Proxy.score` only states its formula:

- it works on a deep copy of the student (the caller's weights, buffers, BN running statistics, ``.grad``
  and train/eval flags are never touched; hooks are only ever added to the copy);
- it sets the copy's BN mode (``bn_mode``: ``"train"`` = batch statistics, ``"eval"`` = running statistics,
  ``"removed"`` = BN replaced by identity, ``"n/a"`` = not run);
- it seeds a forked RNG (``seed=0`` by default), so a score is deterministic and the global RNG is untouched;
- the teacher (when one is needed) runs in eval mode under ``torch.no_grad``; its modes are restored.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from ..registry import Registry

__all__ = ["PROXIES", "Proxy", "proxy_batch", "outputs_of", "teacher_outputs", "prunable_layers",
           "embedding_of"]

#: Proxy classes by name; metadata ``needs_teacher``, ``bn_mode``, ``paper``.
PROXIES: Registry[type[Proxy]] = Registry("proxy")


class Proxy:
    """A zero-cost proxy. Subclasses set the class attributes and implement :meth:`score`."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    bn_mode: ClassVar[str] = "train"  # "train" | "eval" | "removed" | "n/a"
    copy_student: ClassVar[bool] = True

    def __call__(self, student: nn.Module, teacher: nn.Module | None = None,
                 batch: tuple[Tensor, Tensor] | None = None, *, seed: int = 0) -> float:
        """Score ``student`` (for distillation proxies: its match with ``teacher``) on ``batch=(x, y)``."""
        if batch is None or len(batch) < 2:
            raise ConfigError(f"proxy {self.name!r}: needs one labelled batch (x, y)")
        x, y = batch[0], batch[1]
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"proxy {self.name!r} compares the student with the teacher; none was given")
        model = student
        if self.copy_student:
            model = copy.deepcopy(student).to(x.device)
            for p in model.parameters():
                p.grad = None
                p.requires_grad_(True)
            if self.bn_mode == "eval":
                model.eval()
            else:
                model.train()
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _eval_mode(teacher if self.needs_teacher else None):
            torch.manual_seed(seed)
            with torch.enable_grad():
                value = self.score(model, teacher if self.needs_teacher else None, x, y)
        return float(value)

    def score(self, model: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> float:
        """The proxy's formula on ``model`` (a private copy, already in ``bn_mode``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ----------------------------------------------------------------------------------------------- helpers
@contextmanager
def _eval_mode(model: nn.Module | None) -> Iterator[None]:
    if model is None:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def outputs_of(model: nn.Module, x: Tensor) -> Outputs:
    """``model.forward_outputs(x)``; a plain module (``forward`` only) yields logits-only :class:`Outputs`."""
    fo = getattr(model, "forward_outputs", None)
    return fo(x) if fo is not None else Outputs(logits=model(x))


def teacher_outputs(teacher: nn.Module, x: Tensor) -> Outputs:
    with torch.no_grad():
        return outputs_of(teacher, x).detach()


def embedding_of(out: Outputs) -> Tensor:
    """The pooled penultimate vector (N, D): ``out.embedding``, else the global average of the last feature
    map, else the logits."""
    if out.embedding is not None:
        return out.embedding
    if out.feats:
        f = out.feats[-1]
        return F.adaptive_avg_pool2d(f, 1).flatten(1) if f.dim() == 4 else f.flatten(1)
    return out.logits


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers whose weights the pruning-at-init proxies score (Abdelfattah et al.)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def proxy_batch(data: Any, batch_size: int = 64, *, seed: int = 0,
                split: str = "train") -> tuple[Tensor, Tensor]:
    """ONE labelled batch ``(x, y)`` of ``split`` (shuffled with ``seed``): what every proxy scores on."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(f"proxy batch_size must be an integer >= 2, got {batch_size!r}")
    loader = data.loader(split, batch_size, shuffle=True, seed=seed)
    for item in loader:
        return item[0], item[1]
    raise ConfigError(f"proxy batch: the {split!r} split is empty")
