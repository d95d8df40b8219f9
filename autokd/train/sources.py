"""Teacher sources: supply the teacher's outputs for a training batch, online or from a cache (per sample, or
per stored augmented view: :mod:`autokd.train.views`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..files import atomic_write
from ..fingerprint import config_hash, model_fingerprint
from ..locks import build_once
from ..outputs import Outputs

__all__ = ["TeacherSource", "OnlineTeacher", "CachedTeacher"]

class TeacherSource:
    """Supplies the teacher's :class:`Outputs` for a training batch (``x`` and its sample indices)."""

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        raise NotImplementedError

    def train_loader(self, data, batch_size: int, seed: int, **loader_kw):
        """The training batches ``(x, y, idx)`` its outputs belong to (the views cache serves its stored
        views; every other source the dataset's own shuffled loader; ``loader_kw``: ``device``,
        ``num_workers``)."""
        return data.loader("train", batch_size, shuffle=True, seed=seed, **loader_kw)


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
    cached outputs equal what the online teacher would compute on the same batch. Logits are cached eagerly;
    stage features only on first request. ``cache_dir`` persists them across processes and runs.

    The cache is keyed by the content of what produced it: the teacher's weights (a fingerprint of every
    tensor), the data split (``data.info["fingerprint"]``: indices, transform settings) and what is stored.
    A stored file is verified on load (key, row count, class count); any mismatch or a corrupt file is
    recomputed, never reused. Several processes share one file: one computes it under a file lock while the
    others wait, then they load it; it is written under a per-process temporary name and renamed.
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
        self.label = key
        self._fingerprint: str | None = None
        self._store: dict[bool, Outputs] = {}

    def key(self, feats: bool) -> str:
        """The content key of the cached outputs (teacher weights + data split + what is cached)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return config_hash({"teacher": self._fingerprint, "data": self.data.info.get("fingerprint"),
                            "rows": len(self.data.train_eval), "feats": feats, "v": 2})

    def _path(self, feats: bool) -> Path | None:
        if self.cache_dir is None:
            return None
        prefix = f"{self.label}-" if self.label else ""
        return self.cache_dir / f"teacher_outputs_{prefix}{self.key(feats)}_{'feats' if feats else 'logits'}.pt"

    def _load(self, path: Path, feats: bool) -> Outputs | None:
        if not path.is_file():
            return None
        try:
            d = torch.load(path, map_location=self.device, weights_only=True)
            out = Outputs.from_state(d)
        except Exception:  # a corrupt cache is recomputed, never trusted
            return None
        n = len(self.data.train_eval)
        if (d.get("key") != self.key(feats) or out.logits.shape[0] != n
                or out.logits.shape[1] != self.data.num_classes or any(f.shape[0] != n for f in out.feats)):
            return None
        return out

    @torch.no_grad()
    def _compute(self, feats: bool) -> Outputs:
        path = self._path(feats)
        if path is None:
            return self._run(feats)

        def save(p: Path, out: Outputs) -> None:
            with atomic_write(p) as tmp:
                torch.save({"key": self.key(feats), **out.state()}, tmp)

        return build_once(path, partial(self._load, feats=feats), partial(self._run, feats), save)

    @torch.no_grad()
    def _run(self, feats: bool) -> Outputs:
        self.model.eval()
        parts: list[Outputs] = []
        for x, _, _ in self.data.loader("train_eval", 512, shuffle=False):
            x = x.to(self.device)
            parts.append(self.model.forward_outputs(x).detach() if feats else _logits_and_embedding(self.model, x))
        return Outputs.cat(parts)

    def logits(self) -> Tensor:
        """The teacher's logits over the whole training split (computed, or loaded from the cache, once)."""
        if False not in self._store:
            self._store[False] = self._compute(False)
        return self._store[False].logits

    def adopt_logits(self, logits: Tensor) -> None:
        """Use logits another process computed with the same teacher on the same split (:meth:`logits` of
        the Ray driver's source, shipped to each worker process once) instead of computing or loading them."""
        expected = (len(self.data.train_eval), self.data.num_classes)
        if tuple(logits.shape) != expected:
            raise ConfigError(f"teacher outputs: shipped logits have shape {tuple(logits.shape)}, the data split "
                              f"needs {expected}; every node must see the same data")
        self._store[False] = Outputs(logits=logits.to(self.device))

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        if needs_feats not in self._store:
            self._store[needs_feats] = self._compute(needs_feats)
        return self._store[needs_feats].index(idx.to(self._store[needs_feats].logits.device))


def _logits_and_embedding(model: nn.Module, x: Tensor) -> Outputs:
    return Outputs(logits=model(x))
