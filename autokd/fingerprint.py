"""Content fingerprints: short stable hashes that key every cache and stored model to what produced it."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["config_hash", "model_fingerprint"]


def config_hash(obj: Any) -> str:
    """16 hex digits of SHA-256 over ``obj`` as canonical JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """Stable short hash of a model's class and weights (its identity in cache keys)."""
    import torch

    h = hashlib.sha256(type(model).__name__.encode())
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"|{k}:{t.dtype}:{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
