"""What models hand to losses and proxies (:class:`Outputs`) and their probed shapes (:class:`Shapes`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Outputs", "Shapes"]


@dataclass
class Outputs:
    """A model's outputs for one batch.

    - ``logits``: (N, K).
    - ``feats``: stage outputs, shallow to deep, post-activation, each (N, C_i, H_i, W_i). The last
      one is the feature map that is globally pooled into ``embedding``.
    - ``preacts``: the same stages before their last activation (may be empty).
    - ``embedding``: (N, D), the pooled penultimate vector fed to the classifier.
    """

    logits: Tensor
    feats: list[Tensor] = field(default_factory=list)
    preacts: list[Tensor] = field(default_factory=list)
    embedding: Tensor | None = None

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
        )


@dataclass(frozen=True)
class Shapes:
    """Per-sample shapes of a model's :class:`Outputs` (no batch dimension), found by probing."""

    input_shape: tuple[int, ...]
    num_classes: int
    feats: tuple[tuple[int, ...], ...] = ()
    preacts: tuple[tuple[int, ...], ...] = ()
    embedding: int | None = None

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
        )
