"""What models hand to losses and proxies (:class:`Outputs`) and their probed shapes (:class:`Shapes`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Outputs", "Shapes", "QKV"]


class QKV(NamedTuple):
    """One attention block's projected queries, keys and values, each (N, heads, L, d_head) over all L tokens
    (class-like tokens first, then the patch tokens in row-major grid order)."""

    q: Tensor
    k: Tensor
    v: Tensor


@dataclass
class Outputs:
    """A model's outputs for one batch.

    - ``logits``: (N, K), the model's prediction (what ``forward`` returns).
    - ``feats``: stage outputs, shallow to deep, post-activation, each (N, C_i, H_i, W_i). For CNNs the last one
      is the feature map that is globally pooled into ``embedding``. Transformers: one stage per block, its
      patch tokens laid out as a (N, D, H', W') grid (class-like tokens left out; see ``tokens``).
    - ``preacts``: the same stages before their last activation (may be empty).
    - ``embedding``: (N, D), the penultimate vector fed to the classifier (a transformer's class token).

    Transformers only (empty otherwise):

    - ``heads``: logits (N, K) of the individual classifier heads by name (``cls``, ``dist_0``, ...) when the
      prediction fuses several (DeiT's distillation head); ``logits`` is their fusion.
    - ``tokens``: the final (normalised) class-like tokens (N, D) by name (``cls``, ``dist_0``, ...).
    - ``attention``: per block, its :class:`QKV`.
    """

    logits: Tensor
    feats: list[Tensor] = field(default_factory=list)
    preacts: list[Tensor] = field(default_factory=list)
    embedding: Tensor | None = None
    heads: dict[str, Tensor] = field(default_factory=dict)
    tokens: dict[str, Tensor] = field(default_factory=dict)
    attention: list[QKV] = field(default_factory=list)

    def detach(self) -> Outputs:
        return self.apply(lambda t: t.detach())

    def to(self, *args, **kwargs) -> Outputs:
        return self.apply(lambda t: t.to(*args, **kwargs))

    def apply(self, fn) -> Outputs:
        return Outputs(
            logits=fn(self.logits),
            feats=[fn(f) for f in self.feats],
            preacts=[fn(p) for p in self.preacts],
            embedding=None if self.embedding is None else fn(self.embedding),
            heads={k: fn(v) for k, v in self.heads.items()},
            tokens={k: fn(v) for k, v in self.tokens.items()},
            attention=[QKV(*(fn(t) for t in a)) for a in self.attention],
        )

    def index(self, idx: Tensor | slice) -> Outputs:
        return self.apply(lambda t: t[idx])

    @staticmethod
    def cat(parts: list[Outputs]) -> Outputs:
        first = parts[0]
        return Outputs(
            logits=torch.cat([p.logits for p in parts]),
            feats=[torch.cat([p.feats[i] for p in parts]) for i in range(len(first.feats))],
            preacts=[torch.cat([p.preacts[i] for p in parts]) for i in range(len(first.preacts))],
            embedding=None if first.embedding is None else torch.cat([p.embedding for p in parts]),
            heads={k: torch.cat([p.heads[k] for p in parts]) for k in first.heads},
            tokens={k: torch.cat([p.tokens[k] for p in parts]) for k in first.tokens},
            attention=[QKV(*(torch.cat([p.attention[i][j] for p in parts]) for j in range(3)))
                       for i in range(len(first.attention))],
        )

    def state(self) -> dict[str, Any]:
        """Plain containers of tensors (for ``torch.save``; read back with :meth:`from_state`)."""
        return {"logits": self.logits, "feats": list(self.feats), "preacts": list(self.preacts),
                "embedding": self.embedding, "heads": dict(self.heads), "tokens": dict(self.tokens),
                "attention": [tuple(a) for a in self.attention]}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Outputs:
        return cls(d["logits"], list(d["feats"]), list(d["preacts"]), d["embedding"], dict(d.get("heads", {})),
                   dict(d.get("tokens", {})), [QKV(*a) for a in d.get("attention", [])])


@dataclass(frozen=True)
class Shapes:
    """Per-sample shapes of a model's :class:`Outputs` (no batch dimension), found by probing.

    ``heads``: the names of ``Outputs.heads``; ``attention``: per block, (heads, L, d_head) of its queries."""

    input_shape: tuple[int, ...]
    num_classes: int
    feats: tuple[tuple[int, ...], ...] = ()
    preacts: tuple[tuple[int, ...], ...] = ()
    embedding: int | None = None
    heads: tuple[str, ...] = ()
    attention: tuple[tuple[int, int, int], ...] = ()

    @property
    def num_stages(self) -> int:
        return len(self.feats)

    @classmethod
    def of(cls, out: Outputs, input_shape: tuple[int, ...]) -> Shapes:
        return cls(
            input_shape=tuple(input_shape),
            num_classes=int(out.logits.shape[1]),
            feats=tuple(tuple(f.shape[1:]) for f in out.feats),
            preacts=tuple(tuple(p.shape[1:]) for p in out.preacts),
            embedding=None if out.embedding is None else int(out.embedding.shape[1]),
            heads=tuple(out.heads),
            attention=tuple(tuple(int(s) for s in a.q.shape[1:]) for a in out.attention),
        )
