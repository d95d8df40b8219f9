"""Teacher sources: supply the teacher's outputs for a training batch, online or from a cache."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs

__all__ = ["TeacherSource", "OnlineTeacher", "CachedTeacher", "make_teacher_source"]


class TeacherSource:
    """Supplies the teacher's :class:`Outputs` for a training batch (``x`` and its sample indices)."""

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        raise NotImplementedError


class OnlineTeacher(TeacherSource):
    """Runs the (frozen, eval-mode) teacher on every batch."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        self.model.eval()
        if needs_feats:
            return self.model.forward_outputs(x).detach()
        return Outputs(logits=self.model(x)).detach()


class CachedTeacher(TeacherSource):
    """Teacher outputs computed once over the training split and looked up by sample index.

    Valid only when the training transform is deterministic (``DataBundle.deterministic_train``): then the
    cached outputs equal what the online teacher would compute on the same batch. Logits (and embeddings)
    are cached eagerly; stage features only on first request. ``cache_dir`` persists them across processes.
    """

    def __init__(self, model: nn.Module, data, device: torch.device, cache_dir: Path | None = None,
                 key: str = "") -> None:
        if not data.deterministic_train:
            raise ConfigError(
                f"teacher_cache: cached teacher outputs need a deterministic training transform; dataset "
                f"{data.name!r} augments its training data — use teacher_cache: online (or auto)"
            )
        self.model, self.data, self.device = model, data, device
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.key = key
        self._store: dict[bool, Outputs] = {}

    def _path(self, feats: bool) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"teacher_outputs_{self.key}_{'feats' if feats else 'logits'}.pt"

    @torch.no_grad()
    def _compute(self, feats: bool) -> Outputs:
        path = self._path(feats)
        if path is not None and path.is_file():
            try:
                d = torch.load(path, map_location=self.device, weights_only=True)
                return Outputs.from_state(d)
            except Exception:  # a corrupt cache is recomputed, never trusted
                pass
        self.model.eval()
        parts: list[Outputs] = []
        n = len(self.data.train_eval)
        for x, _, _ in self.data.loader("train_eval", 512, shuffle=False):
            x = x.to(self.device)
            parts.append(self.model.forward_outputs(x).detach() if feats else _logits_and_embedding(self.model, x))
        out = Outputs.cat(parts)
        assert out.logits.shape[0] == n
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(out.state(), tmp)
            tmp.replace(path)
        return out

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        if needs_feats not in self._store:
            self._store[needs_feats] = self._compute(needs_feats)
        return self._store[needs_feats].index(idx.to(self._store[needs_feats].logits.device))


def _logits_and_embedding(model: nn.Module, x: Tensor) -> Outputs:
    return Outputs(logits=model(x))


def make_teacher_source(mode: str, model: nn.Module, data, device, cache_dir=None, key="") -> TeacherSource:
    """``mode``: ``online`` | ``cached`` | ``auto`` (cached when the training transform is deterministic)."""
    if mode not in ("online", "cached", "auto"):
        raise ConfigError(f"teacher_cache must be one of auto, cached, online; got {mode!r}")
    if mode == "online" or (mode == "auto" and not data.deterministic_train):
        return OnlineTeacher(model)
    return CachedTeacher(model, data, device, cache_dir=cache_dir, key=key)
