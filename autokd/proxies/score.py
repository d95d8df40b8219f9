"""Score one untrained student with several zero-cost proxies (seeded, failures recorded, never raised)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["score_student", "build_student"]


def build_student(cand: Any, num_classes: int, in_channels: int, *, seed: int = 0,
                  device: torch.device | str | None = None) -> nn.Module:
    """The model a candidate names (anything with ``name`` and ``kwargs``: a ``StudentSpec``, a search
    space's ``StudentCandidate``), initialised under ``torch.manual_seed(seed)`` (as the trainer does for a recipe
    with that seed); the global RNG is left as it was."""
    from .. import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = models.create(cand.name, num_classes, in_channels=in_channels, **cand.kwargs)
    return net.to(device) if device is not None else net


def score_student(student: nn.Module, teacher: nn.Module | None, batch, proxies: Sequence[str], *,
                  seed: int = 0) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Each proxy's score and seconds on one student; a proxy that raises scores NaN (message returned)."""
    from . import create

    scores, times, errors = {}, {}, {}
    for name in proxies:
        proxy = create(name)
        t0 = time.perf_counter()
        try:
            scores[name] = proxy(student, teacher, batch, seed=seed)
        except ConfigError:
            raise
        except Exception as e:  # a proxy failing on one architecture must not end a whole scoring run
            scores[name] = float("nan")
            errors[name] = f"{type(e).__name__}: {e}"
        times[name] = time.perf_counter() - t0
    return scores, times, errors


