"""The augmented-view teacher cache (FKD: Shen & Xing, "A Fast Knowledge Distillation Framework for Visual
Recognition", ECCV 2022).

For each training image, ``K`` views of the dataset's own random augmentation are drawn once (seeded), stored
as their parameters (crop corner + flip, or a RandomResizedCrop box + flip; not pixels) together with the
teacher's outputs on them. In-memory data (``fake`` with ``crop_flip``) render views batch-wise on the device
(:class:`ViewsLoader`); file datasets (CIFAR, image folders, :mod:`autokd.data.pil_augment`) render each image
at its stored view through a DataLoader (:class:`FileViewsLoader`). Each epoch
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

Terms on stage features get the teacher's whole :class:`Outputs` per view stored the same way (a second
folder, every tensor in fp32) when they fit ``feature_budget_mb`` (default 1 GiB: digits-sized tasks);
otherwise the teacher runs online on the same view for them (CIFAR-sized feature maps × K views are hundreds
of GB).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.loading import BatchIterator, EpochDataLoader
from ..data.pil_augment import StoredViews
from ..errors import ConfigError
from ..files import atomic_dir
from ..fingerprint import config_hash, model_fingerprint
from ..locks import build_once
from ..outputs import QKV, Outputs
from .precision import available_cores
from .sources import OnlineTeacher, TeacherSource

__all__ = ["ViewsTeacher", "ViewsLoader", "FileViewsLoader", "VIEW_STREAM", "flatten_outputs", "unflatten_outputs"]

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


class FileViewsLoader:
    """Batches ``(x, y, idx)`` of a file dataset's stored views through a seeded :class:`EpochDataLoader`:
    epoch ``e`` shows sample ``i`` its view ``choice[i]``, drawn as :meth:`ViewsLoader.epoch_views` draws it;
    ``on_epoch(choice)`` is told before the epoch's first batch."""

    def __init__(self, dataset, params: np.ndarray, batch_size: int, *, seed: int,
                 on_epoch: Callable[[Tensor], None], device: torch.device | str | None = None,
                 num_workers: int = 0) -> None:
        self.views, self.seed, self.on_epoch = int(params.shape[1]), int(seed), on_epoch
        self.choice = np.zeros(len(params), dtype=np.int64)
        self.loader = EpochDataLoader(StoredViews(dataset, params, self.choice), batch_size, shuffle=True,
                                      seed=seed, num_workers=num_workers, device=device)

    @property
    def num_samples(self) -> int:
        return len(self.choice)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def epoch_views(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch + VIEW_STREAM)
        return torch.randint(0, self.views, (self.num_samples,), generator=g)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        choice = self.epoch_views(self.loader.epoch)
        self.choice[:] = choice.numpy()  # read by the dataset (and by worker processes forked for this epoch)
        self.on_epoch(choice)
        return iter(self.loader)


class ViewsTeacher(TeacherSource):
    """Teacher outputs on ``views`` stored augmented views per training image (see the module docstring).

    The cache is keyed by the teacher's weights, the data split, the transform, ``views``, ``seed`` and
    ``topk``; it is built once under a file lock (folder written under a temporary name and renamed), verified
    on load, and rebuilt — never reused — when any of them changed. ``batch`` must be fed batches of
    :meth:`train_loader`: it returns the outputs of the views that loader last served for those samples.
    """

    def __init__(self, model: nn.Module, data, device: torch.device, cache_dir: Path | None = None,
                 key: str = "", views: int = 8, seed: int = 0, topk: int | None = None,
                 log: Callable[[str], None] | None = None, feature_budget_mb: float = 1024.0) -> None:
        augment = getattr(data.train, "augment", None) if hasattr(data.train, "x") else None
        files = getattr(data.train, "view_transform", None)
        if augment is None and files is None:
            raise ConfigError(
                f"teacher_cache: views:K needs a parameterised training augmentation (CIFAR's pad-crop+flip, an "
                f"image folder's resized-crop+flip, fake with augment: crop_flip); dataset {data.name!r} has "
                f"none — use auto, cached or online")
        if views < 1:
            raise ConfigError(f"teacher_cache: views:K needs K >= 1 (got {views})")
        if topk is not None and not 1 <= topk < data.num_classes:
            raise ConfigError(f"teacher_cache_topk must be between 1 and num_classes - 1 = "
                              f"{data.num_classes - 1} (got {topk})")
        self.model, self.data, self.device = model, data, torch.device(device)
        #: the in-memory batched augmentation, or (file datasets) the dataset's per-image ViewTransform
        self.augment = augment if augment is not None else files
        self.files = augment is None
        self.views, self.seed, self.topk = int(views), int(seed), topk
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.label, self.log = key, log
        self.online = OnlineTeacher(model)
        self.current_view = torch.zeros(len(data.train), dtype=torch.long, device=self.device)
        self.feature_budget_mb = float(feature_budget_mb)
        #: DataLoader workers that render file datasets' views while the cache is built (none on the CPU,
        #: where they would take cores from the teacher; up to 4 on an accelerator)
        self.num_workers = min(4, available_cores() - 1) if self.device.type == "cuda" and self.files else 0
        self._fingerprint: str | None = None
        self._store: dict[str, dict[str, np.ndarray | Tensor]] = {}
        self._features_fit: bool | None = None

    # ---- identity and storage ----------------------------------------------------------------------
    def key(self, kind: str = "logits") -> str:
        """The content key of a stored kind: ``logits`` (the teacher's logits) or ``outputs`` (its whole
        :class:`Outputs`: stage features too)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return config_hash({"teacher": self._fingerprint, "data": self.data.info.get("fingerprint"),
                            "rows": len(self.data.train), "transform": self.augment.describe(),
                            "views": self.views, "seed": self.seed, "topk": self.topk, "kind": kind, "v": 1})

    def path(self, kind: str = "logits") -> Path | None:
        if self.cache_dir is None:
            return None
        prefix = f"{self.label}-" if self.label else ""
        suffix = "" if kind == "logits" else f"_{kind}"
        return self.cache_dir / f"teacher_views_{prefix}{self.key(kind)}{suffix}"

    def _load(self, path: Path, kind: str) -> dict[str, np.ndarray] | None:
        try:
            meta = json.loads((path / "meta.json").read_text())
            arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in meta["names"]}
        except (OSError, ValueError, KeyError, TypeError):  # missing or corrupt: rebuilt, never trusted
            return None
        n, k = len(self.data.train), self.views
        if meta.get("key") != self.key(kind) or any(a.shape[:2] != (n, k) for a in arrays.values()):
            return None
        if kind == "logits":
            width = self.data.num_classes if self.topk is None else self.topk
            name = "logits" if self.topk is None else "top_logp"
            if name not in arrays or arrays[name].shape[2] != width:
                return None
        return arrays

    def _save(self, path: Path, arrays: dict[str, np.ndarray], kind: str) -> None:
        with atomic_dir(path) as tmp:
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", a)
            meta = {"key": self.key(kind), "names": sorted(arrays), "views": self.views, "seed": self.seed,
                    "topk": self.topk, "rows": len(self.data.train), "transform": self.augment.describe()}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    def view_params(self) -> Tensor:
        """The stored views' parameters, int64 (N, K, P): drawn from ``torch.Generator().manual_seed(seed)``
        (file datasets: per image, from its size)."""
        g = torch.Generator().manual_seed(self.seed)
        n = len(self.data.train)
        if not self.files:
            return self.augment.sample(n * self.views, g).view(n, self.views, -1)
        sizes = torch.tensor([self.data.train.image_size(i) for i in range(n)], dtype=torch.long)
        return self.augment.sample_batch(sizes.repeat_interleave(self.views, 0), g).view(n, self.views, -1)

    def _view_batches(self, params: Tensor, v: int, bs: int) -> Iterator[tuple[int, Tensor]]:
        """``(first row, images)`` batches of view ``v`` of every training image, in order."""
        if not self.files:
            x_all = self.data.train.x
            for s in range(0, len(x_all), bs):
                yield s, self.augment.apply(x_all[s:s + bs].to(self.device), params[s:s + bs, v])
            return
        choice = np.full(len(params), v, dtype=np.int64)
        loader = EpochDataLoader(StoredViews(self.data.train, params.numpy(), choice), bs,
                                 num_workers=self.num_workers)
        for x, _, idx in loader:
            yield int(idx[0]), x.to(self.device)

    def _forward(self, x: Tensor, kind: str) -> dict[str, Tensor]:
        if kind == "logits":
            return {"logits": self.model(x)}
        return flatten_outputs(self.model.forward_outputs(x))

    @torch.no_grad()
    def _build(self, kind: str) -> dict[str, np.ndarray]:
        n, k, c = len(self.data.train), self.views, self.data.num_classes
        params = self.view_params()
        store: dict[str, Tensor] = {}
        self.model.eval()
        if self.log is not None:
            self.log(f"teacher views: computing the teacher's {kind} on {k} views x {n} images (once per study)")
        for v in range(k):
            for s, x in self._view_batches(params, v, 256):
                bs = len(x)
                for name, t in self._forward(x, kind).items():
                    if name not in store:
                        store[name] = torch.empty(n, k, *t.shape[1:])
                    store[name][s:s + bs, v] = t.float().cpu()
            if self.log is not None:
                self.log(f"teacher views: {v + 1}/{k} views done ({100 * (v + 1) // k}%)")
        small = params.numel() == 0 or int(params.max()) < 2**15
        out = {"params": params.to(torch.int16 if small else torch.int32).numpy()}
        if kind != "logits" or self.topk is None:
            out.update({name: t.numpy() for name, t in store.items()})
            return out
        logp = torch.log_softmax(store["logits"], dim=-1)
        top, idx = logp.topk(self.topk, dim=-1)
        rest = (1.0 - top.exp().sum(-1)).clamp_min(1e-30) / (c - self.topk)
        out.update(top_logp=top.numpy(), top_idx=idx.to(torch.int32).numpy(), rest_logp=rest.log().numpy())
        return out

    def _arrays(self, kind: str = "logits") -> dict[str, np.ndarray | Tensor]:
        if kind not in self._store:
            path = self.path(kind)
            if path is None:
                arrays: dict[str, np.ndarray] = self._build(kind)
            else:
                build_once(path, partial(self._load, kind=kind), partial(self._build, kind),
                           partial(self._save, kind=kind))
                arrays = self._load(path, kind)  # the memory-mapped files every process shares
                if arrays is None:
                    raise ConfigError(f"teacher views cache {path} could not be read back after building it")
            store: dict[str, np.ndarray | Tensor] = dict(arrays)  # CPU: memory-mapped, shared by processes
            size = sum(a.nbytes for a in arrays.values())
            if path is None or (self.device.type != "cpu" and size <= RESIDENT_BYTES):
                store = {n: torch.from_numpy(np.array(a)).to(self.device) for n, a in arrays.items()}
            self._store[kind] = store
        return self._store[kind]

    @torch.no_grad()
    def features_fit(self) -> bool:
        """Whether the teacher's whole outputs on every view fit ``feature_budget_mb`` (stored as fp32);
        decided once, with a log line."""
        if self._features_fit is None:
            self.model.eval()
            x = self.data.train.x[:1].to(self.device)
            per_view = sum(t[0].numel() * 4 for t in flatten_outputs(self.model.forward_outputs(x)).values())
            need = per_view * len(self.data.train) * self.views / 2**20
            self._features_fit = need <= self.feature_budget_mb
            if self.log is not None:
                where = "stored with the views" if self._features_fit else "computed online on each view"
                self.log(f"teacher views: stage features need {need:.0f} MB for {self.views} views (budget "
                         f"{self.feature_budget_mb:g} MB): {where}")
        return self._features_fit

    # ---- the source --------------------------------------------------------------------------------
    def train_loader(self, data, batch_size: int, seed: int, **loader_kw) -> ViewsLoader | FileViewsLoader:
        """Batches of the stored views: in-memory data held on the source's device (``loader_kw`` does not
        apply); file datasets through a DataLoader (``loader_kw``: ``device``, ``num_workers``)."""
        if data is not self.data:
            raise ConfigError("the views cache serves the dataset it was built for; build one per dataset")
        arrays = self._arrays()
        params = arrays["params"]
        params = params if isinstance(params, Tensor) else torch.from_numpy(np.array(params))
        if self.files:
            return FileViewsLoader(data.train, params.long().cpu().numpy(), batch_size, seed=seed,
                                   on_epoch=self._epoch_views, **loader_kw)
        return ViewsLoader(data.train.x, data.train.y, batch_size, params=params.long(), augment=self.augment,
                           on_batch=self._served, seed=seed, device=self.device)

    def _epoch_views(self, views: Tensor) -> None:
        self.current_view = views.to(self.device)

    def _served(self, idx: Tensor, views: Tensor) -> None:
        self.current_view[idx.to(self.current_view.device)] = views.to(self.current_view.device)

    def _pick(self, kind: str, idx: Tensor, views: Tensor) -> dict[str, Tensor]:
        a = self._arrays(kind)
        first = next(iter(a.values()))
        if isinstance(first, Tensor):
            i, v = idx.to(first.device), views.to(first.device)
            return {n: t[i, v] for n, t in a.items() if n != "params"}
        i, v = idx.cpu().numpy(), views.cpu().numpy()
        return {n: torch.from_numpy(np.asarray(m[i, v])).to(self.device) for n, m in a.items() if n != "params"}

    def stored_logits(self, idx: Tensor, views: Tensor) -> Tensor:
        """The teacher's stored logits (or rebuilt log-probabilities with ``topk``) of ``views`` of ``idx``."""
        pick = self._pick("logits", idx, views)
        if self.topk is None:
            return pick["logits"].to(self.device)
        rest = pick["rest_logp"][:, None].expand(-1, self.data.num_classes).clone()
        return rest.scatter_(1, pick["top_idx"].long(), pick["top_logp"]).to(self.device)

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        views = self.current_view[idx.to(self.current_view.device)]
        if not needs_feats:
            return Outputs(logits=self.stored_logits(idx, views))
        if not self.features_fit():  # over the disk budget: the teacher runs on the same view
            return self.online.batch(x, idx, needs_feats=True)
        return unflatten_outputs(self._pick("outputs", idx, views))


def flatten_outputs(o: Outputs) -> dict[str, Tensor]:
    """Every tensor of ``o`` under a file-safe name (``logits``, ``feats.0``, ``heads.<name>``, ``attention.1.2``)."""
    d = {"logits": o.logits}
    d.update({f"feats.{i}": t for i, t in enumerate(o.feats)})
    d.update({f"preacts.{i}": t for i, t in enumerate(o.preacts)})
    if o.embedding is not None:
        d["embedding"] = o.embedding
    d.update({f"heads.{k}": t for k, t in o.heads.items()})
    d.update({f"tokens.{k}": t for k, t in o.tokens.items()})
    d.update({f"attention.{i}.{j}": t for i, a in enumerate(o.attention) for j, t in enumerate(a)})
    return d


def unflatten_outputs(d: dict[str, Tensor]) -> Outputs:
    """The inverse of :func:`flatten_outputs`."""
    def listed(prefix: str) -> list[Tensor]:
        found = {int(n.split(".")[1]): t for n, t in d.items() if n.startswith(prefix + ".")}
        return [found[i] for i in range(len(found))]

    attention = {}
    for n, t in d.items():
        if n.startswith("attention."):
            _, i, j = n.split(".")
            attention.setdefault(int(i), {})[int(j)] = t
    return Outputs(logits=d["logits"], feats=listed("feats"), preacts=listed("preacts"),
                   embedding=d.get("embedding"),
                   heads={n.split(".", 1)[1]: t for n, t in d.items() if n.startswith("heads.")},
                   tokens={n.split(".", 1)[1]: t for n, t in d.items() if n.startswith("tokens.")},
                   attention=[QKV(*(attention[i][j] for j in range(3))) for i in range(len(attention))])
