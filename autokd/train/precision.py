"""Mixed precision and per-process speed settings of the training loop.

``optim.precision``: ``auto`` (bf16 on a CUDA device that supports it, else fp32; always fp32 on the CPU),
``fp32``, ``bf16`` or ``fp16``. Reduced precision runs the forward passes under ``torch.autocast``;
the distiller computes every loss in fp32 outside autocast (softmax at high temperatures, Gram matrices and
KL sums lose too much in 16 bits). fp16 scales the loss with a ``GradScaler`` (bf16 has fp32's range and
needs none).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["resolve_precision", "autocast", "make_scaler", "available_cores", "limit_threads",
           "channels_last", "DTYPES"]

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision not in DTYPES:
        raise ConfigError(f"optim.precision must be auto, fp32, bf16 or fp16 (got {precision!r})")
    dtype = DTYPES[precision]
    if dtype is not None and not _autocast_supported(device, dtype):
        raise ConfigError(f"optim.precision: {precision} autocast is not supported on {device.type} by this "
                          f"torch ({torch.__version__}); use fp32 or bf16")
    return dtype


def _autocast_supported(device: torch.device, dtype: torch.dtype) -> bool:
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            a = torch.ones(2, 2, device=device)
            return (a @ a).dtype == dtype
    except (RuntimeError, AssertionError):
        return False


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 (None otherwise)."""
    if dtype is not torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def scaled_backward_step(scaler: torch.amp.GradScaler) -> Callable[[dict[str, Tensor], torch.optim.Optimizer],
                                                                   None]:
    """The standard backward step (zero grads, backward of ``"loss"``, step) through ``scaler``: the loss is
    scaled before backward, the step skipped when a gradient is inf/NaN, and the scale adapted."""

    def step(losses: dict[str, Tensor], opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.step(opt)
        scaler.update()

    return step


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; the machine's count where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def limit_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: :func:`available_cores`, only ever lowering
    torch's own default, which counts the machine's cores, not the process's). Returns the count in use."""
    n = int(threads) if threads else min(torch.get_num_threads(), available_cores())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def channels_last(x: Tensor, device: torch.device) -> Tensor:
    """Image batches in channels-last layout on CUDA (faster convolutions under autocast); else unchanged."""
    if device.type == "cuda" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
