"""The augmented-view teacher cache (FKD: Shen & Xing, "A Fast Knowledge Distillation Framework for Visual
Recognition", ECCV 2022).

For each training image, ``K`` views of the dataset's own random augmentation are drawn once (seeded), stored
as their parameters (crop corner + flip, not pixels) together with the teacher's outputs on them. Each epoch
the student sees one stored view per image (drawn per epoch from the recipe's seed), so the teacher never
runs while students train, and every trial and worker of a study shares the one cache.

Stored (numpy ``.npy`` files in one folder, opened memory-mapped, so worker processes share the pages):
``params`` int16 (N, K, P); either ``logits`` float32 (N, K, C), or, with ``topk=k`` (many classes), FKD's
compressed soft labels: ``top_logp`` float32 (N, K, k), the log-probabilities (T = 1) of the teacher's k most
likely classes, ``top_idx`` int32 (N, K, k) and ``rest_logp`` float32 (N, K), the log of the remaining mass
spread evenly over the other C − k classes (FKD's official code keeps the top-k probabilities and spreads the
rest uniformly when it rebuilds the soft label). With ``topk`` the teacher's "logits" are rebuilt as those
log-probabilities: softmax at T = 1 gives the stored soft label exactly, other temperatures an approximation,
and losses on raw logits (``logit_mse``) see logits shifted per row by their log-sum-exp.

Stage features are not stored: terms that need them get the teacher run online on the same view.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.loading import BatchIterator
from ..errors import ConfigError
from ..files import atomic_dir
from ..fingerprint import config_hash, model_fingerprint
from ..outputs import Outputs
from .sources import OnlineTeacher, TeacherSource, build_once

__all__ = ["ViewsTeacher", "ViewsLoader", "VIEW_STREAM"]

#: offset of the per-epoch view choice's random stream from the loader's shuffling stream
VIEW_STREAM = 0x2545F491
#: stored outputs up to this size are copied into GPU memory; larger ones stay memory-mapped
RESIDENT_BYTES = 2 << 30


class ViewsLoader(BatchIterator):
    """Batches of stored views: epoch ``e`` shows sample ``i`` its view ``choice[i]``, drawn uniformly from
    ``0..K-1`` with ``torch.Generator().manual_seed(seed * 1000003 + e + VIEW_STREAM)``; ``on_batch(idx, views)``
    is told which views a batch holds before it is yielded."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, params: Tensor, augment,
                 on_batch: Callable[[Tensor, Tensor], None], shuffle: bool = True, seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        super().__init__(x, y, batch_size, shuffle=shuffle, seed=seed, device=device, augment=augment)
        self.params = params.to(self.x.device)
        self.on_batch = on_batch
        self.choice = torch.zeros(self.num_samples, dtype=torch.long, device=self.x.device)

    def epoch_views(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch + VIEW_STREAM)
        k = self.params.shape[1]
        self.choice = torch.randint(0, k, (self.num_samples,), generator=g).to(self.x.device)
        rows = torch.arange(self.num_samples, device=self.x.device)
        return self.params[rows, self.choice].long()

    def _batches(self, order: Tensor) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, y, idx in super()._batches(order):
            self.on_batch(idx, self.choice[idx])
            yield x, y, idx


class ViewsTeacher(TeacherSource):
    """Teacher outputs on ``views`` stored augmented views per training image (see the module docstring).

    The cache is keyed by the teacher's weights, the data split, the transform, ``views``, ``seed`` and
    ``topk``; it is built once under a file lock (folder written under a temporary name and renamed), verified
    on load, and rebuilt — never reused — when any of them changed. ``batch`` must be fed batches of
    :meth:`train_loader`: it returns the outputs of the views that loader last served for those samples.
    """

    def __init__(self, model: nn.Module, data, device: torch.device, cache_dir: Path | None = None,
                 key: str = "", views: int = 8, seed: int = 0, topk: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        augment = getattr(data.train, "augment", None)
        if augment is None or not hasattr(data.train, "x"):
            raise ConfigError(
                f"teacher_cache: views:K needs an in-memory dataset with a parameterised augmentation (e.g. fake "
                f"with augment: crop_flip); dataset {data.name!r} has none — use auto, cached or online")
        if views < 1:
            raise ConfigError(f"teacher_cache: views:K needs K >= 1 (got {views})")
        if topk is not None and not 1 <= topk < data.num_classes:
            raise ConfigError(f"teacher_cache_topk must be between 1 and num_classes - 1 = "
                              f"{data.num_classes - 1} (got {topk})")
        self.model, self.data, self.device = model, data, torch.device(device)
        self.augment, self.views, self.seed, self.topk = augment, int(views), int(seed), topk
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.label, self.log = key, log
        self.online = OnlineTeacher(model)
        self.current_view = torch.zeros(len(data.train), dtype=torch.long, device=self.device)
        self._fingerprint: str | None = None
        self._store: dict[str, np.ndarray | Tensor] | None = None

    # ---- identity and storage ----------------------------------------------------------------------
    def key(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return config_hash({"teacher": self._fingerprint, "data": self.data.info.get("fingerprint"),
                            "rows": len(self.data.train), "transform": self.augment.describe(),
                            "views": self.views, "seed": self.seed, "topk": self.topk, "v": 1})

    def path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        prefix = f"{self.label}-" if self.label else ""
        return self.cache_dir / f"teacher_views_{prefix}{self.key()}"

    def _names(self) -> tuple[str, ...]:
        return ("params", "logits") if self.topk is None else ("params", "top_logp", "top_idx", "rest_logp")

    def _load(self, path: Path) -> dict[str, np.ndarray] | None:
        try:
            meta = json.loads((path / "meta.json").read_text())
            arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in self._names()}
        except (OSError, ValueError):  # missing or corrupt: rebuilt, never trusted
            return None
        n, k = len(self.data.train), self.views
        if meta.get("key") != self.key() or any(a.shape[:2] != (n, k) for a in arrays.values()):
            return None
        width = self.data.num_classes if self.topk is None else self.topk
        if arrays["logits" if self.topk is None else "top_logp"].shape[2] != width:
            return None
        return arrays

    def _save(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        with atomic_dir(path) as tmp:
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", a)
            meta = {"key": self.key(), "views": self.views, "seed": self.seed, "topk": self.topk,
                    "rows": len(self.data.train), "transform": self.augment.describe()}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    def view_params(self) -> Tensor:
        """The stored views' parameters, int64 (N, K, P): drawn from ``torch.Generator().manual_seed(seed)``."""
        g = torch.Generator().manual_seed(self.seed)
        n = len(self.data.train)
        return self.augment.sample(n * self.views, g).view(n, self.views, -1)

    @torch.no_grad()
    def _build(self) -> dict[str, np.ndarray]:
        n, k, c = len(self.data.train), self.views, self.data.num_classes
        params = self.view_params()
        logits = torch.empty(n, k, c)
        x_all, bs = self.data.train.x, 256
        self.model.eval()
        if self.log is not None:
            self.log(f"teacher views: computing the teacher on {k} views x {n} images (once per study)")
        for v in range(k):
            for s in range(0, n, bs):
                x = self.augment.apply(x_all[s:s + bs].to(self.device), params[s:s + bs, v])
                logits[s:s + bs, v] = self.model(x).float().cpu()
            if self.log is not None:
                self.log(f"teacher views: {v + 1}/{k} views done ({100 * (v + 1) // k}%)")
        out = {"params": params.to(torch.int16).numpy()}
        if self.topk is None:
            out["logits"] = logits.numpy()
            return out
        logp = torch.log_softmax(logits, dim=-1)
        top, idx = logp.topk(self.topk, dim=-1)
        rest = (1.0 - top.exp().sum(-1)).clamp_min(1e-30) / (c - self.topk)
        out.update(top_logp=top.numpy(), top_idx=idx.to(torch.int32).numpy(), rest_logp=rest.log().numpy())
        return out

    def _arrays(self) -> dict[str, np.ndarray | Tensor]:
        if self._store is None:
            path = self.path()
            if path is None:
                arrays: dict[str, np.ndarray] = self._build()
            else:
                build_once(path, self._load, self._build, self._save)
                arrays = self._load(path)  # the memory-mapped files every process shares
                if arrays is None:
                    raise ConfigError(f"teacher views cache {path} could not be read back after building it")
            store: dict[str, np.ndarray | Tensor] = dict(arrays)  # CPU: memory-mapped, shared by processes
            size = sum(a.nbytes for a in arrays.values())
            if path is None or (self.device.type != "cpu" and size <= RESIDENT_BYTES):
                store = {n: torch.from_numpy(np.array(a)).to(self.device) for n, a in arrays.items()}
            self._store = store
        return self._store

    # ---- the source --------------------------------------------------------------------------------
    def train_loader(self, data, batch_size: int, seed: int) -> ViewsLoader:
        if data is not self.data:
            raise ConfigError("the views cache serves the dataset it was built for; build one per dataset")
        arrays = self._arrays()
        params = arrays["params"]
        params = params if isinstance(params, Tensor) else torch.from_numpy(np.array(params))
        return ViewsLoader(data.train.x, data.train.y, batch_size, params=params.long(), augment=self.augment,
                           on_batch=self._served, seed=seed, device=self.device)

    def _served(self, idx: Tensor, views: Tensor) -> None:
        self.current_view[idx.to(self.current_view.device)] = views.to(self.current_view.device)

    def stored_logits(self, idx: Tensor, views: Tensor) -> Tensor:
        """The teacher's stored logits (or rebuilt log-probabilities with ``topk``) of ``views`` of ``idx``."""
        a = self._arrays()
        first = next(iter(a.values()))
        if isinstance(first, Tensor):
            i, v = idx.to(first.device), views.to(first.device)
            pick = {n: t[i, v] for n, t in a.items() if n != "params"}
        else:
            i, v = idx.cpu().numpy(), views.cpu().numpy()
            pick = {n: torch.from_numpy(np.asarray(m[i, v])) for n, m in a.items() if n != "params"}
        if self.topk is None:
            return pick["logits"].to(self.device)
        rest = pick["rest_logp"][:, None].expand(-1, self.data.num_classes).clone()
        return rest.scatter_(1, pick["top_idx"].long(), pick["top_logp"]).to(self.device)

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        if needs_feats:  # stage features are not stored: the teacher runs on the same view
            return self.online.batch(x, idx, needs_feats=True)
        views = self.current_view[idx.to(self.current_view.device)]
        return Outputs(logits=self.stored_logits(idx, views))
