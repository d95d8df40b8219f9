"""Shared pieces of the model zoo: the registry, the :class:`ZooModel` interface and small helpers."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs, Shapes
from ..registry import Registry

__all__ = [
    "MODELS",
    "ZooModel",
    "MaybeMaxPool2d",
    "shapes",
    "example_input",
    "count_params",
    "check_int",
    "check_positive",
    "check_choice",
    "flop_counter",
]

MODELS: Registry = Registry("model")


class ZooModel(nn.Module):
    """Base class of zoo models.

    Subclasses build ``self.classifier`` (an ``nn.Linear``) and implement :meth:`forward_outputs`, usually
    ending with :meth:`_head`. ``forward(x)`` returns the logits of ``forward_outputs(x)``.
    """

    classifier: nn.Linear
    #: dtype of the inputs ``forward`` takes: float images, or ``torch.long`` token ids (text models)
    input_dtype: torch.dtype = torch.float32

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_outputs(x).logits

    def forward_outputs(self, x: Tensor) -> Outputs:  # pragma: no cover - abstract
        raise NotImplementedError

    def _head(self, feats: list[Tensor], preacts: list[Tensor]) -> Outputs:
        """Global-average-pool the last feature map into the embedding and classify it."""
        emb = F.adaptive_avg_pool2d(feats[-1], 1).flatten(1)
        return Outputs(logits=self.classifier(emb), feats=feats, preacts=preacts, embedding=emb)


class MaybeMaxPool2d(nn.Module):
    """2×2 / stride-2 max pool (ceil mode) that is skipped when the map is already 1 pixel high or wide.

    Lets VGG-style stacks run on 8×8 inputs without ever going below 1×1.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] < 2 or x.shape[-2] < 2:
            return x
        return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


# ----------------------------------------------------------------------------------------------- helpers


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device, torch.get_default_dtype()
    return torch.device("cpu"), torch.get_default_dtype()


def example_input(model: nn.Module, input_shape: tuple[int, ...] | list[int], batch: int = 2) -> Tensor:
    """A batch of zeros that ``model`` accepts: ``(batch, *input_shape)`` on the model's device, in its float
    dtype for images, or ``torch.long`` token ids (all id 0) for models whose ``input_dtype`` is an integer
    type (text models; their ``input_shape`` is ``(seq_len,)``)."""
    device, dtype = _device_dtype(model)
    wanted = getattr(model, "input_dtype", None)
    if isinstance(wanted, torch.dtype) and not wanted.is_floating_point:
        dtype = wanted
    return torch.zeros((batch, *(int(s) for s in input_shape)), device=device, dtype=dtype)


def shapes(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> Shapes:
    """Probe ``model.forward_outputs`` with a batch of 2 zeros of ``input_shape`` (C, H, W), or token ids of
    ``(seq_len,)`` for text models (see :func:`example_input`).

    Runs in eval mode under ``torch.no_grad`` on the model's device; every submodule's train/eval mode is
    restored afterwards.
    """
    input_shape = tuple(int(s) for s in input_shape)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            out = model.forward_outputs(example_input(model, input_shape))
    finally:
        for m, training in modes:
            m.training = training
    return Shapes.of(out, input_shape)


def flop_counter():
    """``torch.utils.flop_counter.FlopCounterMode(display=False)`` that also counts torch's fused CPU attention
    kernel (``F.scaled_dot_product_attention`` on CPU dispatches to an op the counter does not know, which it
    would count as 0 FLOPs) with the counter's own formula for attention (4·N·heads·L²·d)."""
    import torch.utils.flop_counter as fc

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    def sdpa(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {cpu_sdpa: sdpa} if cpu_sdpa is not None and cpu_sdpa not in fc.flop_registry else {}
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared parameter counted once, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def check_int(name: str, value: Any, *, minimum: int = 1, model: str = "") -> int:
    """Validate an integer parameter (``bool`` is rejected); raise :class:`ConfigError` naming it."""
    where = f"model {model!r}: " if model else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: Any, *, model: str = "") -> float:
    """Validate a finite positive number; raise :class:`ConfigError` naming it."""
    where = f"model {model!r}: " if model else ""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}{name} must be a positive number, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, allowed: list, *, model: str = "") -> Any:
    """Validate that ``value`` is one of ``allowed`` (compared with ``==``); return the allowed item."""
    where = f"model {model!r}: " if model else ""
    if not isinstance(value, bool):
        for a in allowed:
            try:
                if value == a:
                    return a
            except Exception:  # odd types simply do not match
                pass
    shown = ", ".join(str(a) for a in allowed)
    raise ConfigError(f"{where}{name} must be one of {{{shown}}}, got {value!r}")


def kaiming_init(module: nn.Module, linear_std: float | None = None) -> None:
    """He-normal (fan_out) convs, unit/zero norms, zero linear bias (CRD's CIFAR init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
