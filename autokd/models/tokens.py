"""Helpers for transformer models, shared by the zoo ViT and wrapped foreign transformers (torchvision ViT).

- :func:`is_attention` / :func:`transformer_blocks`: a *block* is a module with an attention module as a direct
  child; blocks are a transformer's stages (``Outputs.feats`` has one entry per block).
- :class:`QKVCapture`: each attention module's projected queries, keys and values, captured on the
  projections and never on the fused attention kernel (``F.scaled_dot_product_attention`` or torch's
  ``MultiheadAttention`` fast path expose no attention weights): a forward hook on a fused ``qkv``
  ``nn.Linear`` (timm convention, the zoo ViT) reads its output; an ``nn.MultiheadAttention`` (whose
  projection is a weight, not a submodule) gets a forward pre-hook that applies its input projection to the
  inputs it receives -- the same values the fused op computes internally, with gradients.
- :func:`token_grid`: how many class-like tokens precede the patch grid, and the grid's size.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import QKV

__all__ = ["is_attention", "transformer_blocks", "attention_of", "QKVCapture", "token_grid"]


def is_attention(module: nn.Module) -> bool:
    """``nn.MultiheadAttention``, or a module with a fused ``qkv`` ``nn.Linear`` and an int ``num_heads``."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    return isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int)


def attention_of(block: nn.Module) -> nn.Module:
    """The attention module directly inside ``block``."""
    for child in block.children():
        if is_attention(child):
            return child
    raise ConfigError(f"{type(block).__name__} holds no attention module")


def transformer_blocks(model: nn.Module) -> list[str]:
    """Names (as in ``named_modules``) of the modules of ``model`` that directly contain an attention module,
    in definition order; empty for models without attention."""
    return [name for name, m in model.named_modules() if name and any(is_attention(c) for c in m.children())]


def _heads(t: Tensor, num_heads: int) -> Tensor:
    """(N, L, D) -> (N, heads, L, D / heads)."""
    n, length, d = t.shape
    return t.reshape(n, length, num_heads, d // num_heads).transpose(1, 2)


class QKVCapture:
    """Context manager: while active, records every listed attention module's :class:`QKV` (one per call).

    >>> with QKVCapture([blk.attn for blk in vit.blocks]) as cap:
    ...     vit(x)
    >>> cap.result()          # [QKV(q, k, v), ...] in the order of ``modules``
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = list(modules)
        self.found: dict[int, QKV] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> QKVCapture:
        for i, m in enumerate(self.modules):
            if isinstance(m, nn.MultiheadAttention):
                self._handles.append(m.register_forward_pre_hook(self._mha_hook(i), with_kwargs=True))
            elif is_attention(m):
                self._handles.append(m.qkv.register_forward_hook(self._fused_hook(i, m.num_heads)))
            else:
                raise ConfigError(f"{type(m).__name__} is not an attention module (see autokd.models.tokens)")
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _fused_hook(self, i: int, num_heads: int):
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
            n, length, d3 = out.shape
            q, k, v = out.reshape(n, length, 3, num_heads, d3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)
            self.found[i] = QKV(q, k, v)

        return hook

    def _mha_hook(self, i: int):
        def hook(m: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
            names = ("query", "key", "value")
            q_in, k_in, v_in = (args[j] if len(args) > j else kwargs[names[j]] for j in range(3))
            if not m.batch_first:  # (L, N, D) -> (N, L, D)
                q_in, k_in, v_in = (t.transpose(0, 1) for t in (q_in, k_in, v_in))
            d = m.embed_dim
            bias = m.in_proj_bias
            b = (None, None, None) if bias is None else (bias[:d], bias[d:2 * d], bias[2 * d:])
            if m._qkv_same_embed_dim:
                w = m.in_proj_weight
                ws = (w[:d], w[d:2 * d], w[2 * d:])
            else:
                ws = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
            q, k, v = (F.linear(t, wj, bj) for t, wj, bj in zip((q_in, k_in, v_in), ws, b, strict=True))
            self.found[i] = QKV(_heads(q, m.num_heads), _heads(k, m.num_heads), _heads(v, m.num_heads))

        return hook

    def result(self) -> list[QKV]:
        missing = [i for i in range(len(self.modules)) if i not in self.found]
        if missing:
            raise ConfigError(f"attention module(s) {missing} were not called during the forward pass")
        return [self.found[i] for i in range(len(self.modules))]


def token_grid(num_tokens: int, hw: tuple[int, int], max_prefix: int = 8) -> tuple[int, int, int]:
    """``(prefix, h, w)``: the fewest leading class-like tokens (at most ``max_prefix``) such that the remaining
    ``num_tokens - prefix`` patch tokens form an ``h × w`` grid with the input's aspect ratio ``hw``."""
    big_h, big_w = int(hw[0]), int(hw[1])
    for prefix in range(0, min(max_prefix, num_tokens - 1) + 1):
        n = num_tokens - prefix
        for h in range(1, n + 1):
            if n % h == 0 and h * big_w == (n // h) * big_h:
                return prefix, h, n // h
    raise ConfigError(f"cannot lay {num_tokens} tokens out as a patch grid for a {big_h}×{big_w} input")
