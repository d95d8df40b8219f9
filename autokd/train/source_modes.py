"""Choosing a teacher source from the study's ``teacher_cache`` setting."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ConfigError
from .sources import CachedTeacher, OnlineTeacher, TeacherSource
from .views import ViewsTeacher

__all__ = ["make_teacher_source", "parse_teacher_cache", "AUTO_VIEWS"]

#: views per image the ``auto`` mode stores for augmented data
AUTO_VIEWS = 8


def parse_teacher_cache(mode: str) -> tuple[str, int]:
    """``auto`` | ``online`` | ``cached`` | ``views`` | ``views:K`` -> ``(kind, K)`` (K = 0 unless views);
    a one-line ConfigError otherwise."""
    if mode in ("auto", "online", "cached"):
        return mode, 0
    kind, _, k = str(mode).partition(":")
    if kind == "views" and (not k or (k.isdigit() and int(k) >= 1)):
        return "views", int(k) if k else AUTO_VIEWS
    raise ConfigError(f"teacher_cache must be auto, online, cached or views:K with K >= 1; got {mode!r}")


def make_teacher_source(mode: str, model: nn.Module, data, device, cache_dir=None, key="", *, seed: int = 0,
                        topk: int | None = None, log: Callable[[str], None] | None = None,
                        feature_budget_mb: float = 1024.0) -> TeacherSource:
    """``mode`` (see :func:`parse_teacher_cache`): ``online``; ``cached`` (outputs per sample; needs a
    deterministic training transform); ``views:K`` (K stored augmented views per image, FKD; needs a
    parameterised augmentation); ``auto``: cached for deterministic data,
    views for a parameterised augmentation (``fake``'s ``crop_flip``, CIFAR's pad-crop+flip, an image folder's
    resized-crop+flip), else online. ``key`` labels the cache files (e.g. the helper model
    they belong to); their content key is always the fingerprint of the model's weights and of the data split
    (plus, for views, the transform, K, ``seed`` and ``topk``). ``feature_budget_mb``: views store stage
features too when they fit it, else terms on features run the teacher online on the same views."""
    kind, views = parse_teacher_cache(mode)
    if kind == "auto":
        if data.deterministic_train:
            kind = "cached"
        elif (getattr(data.train, "augment", None) is not None
              or getattr(data.train, "view_transform", None) is not None):
            kind, views = "views", AUTO_VIEWS
        else:
            kind = "online"
    if kind == "online":
        return OnlineTeacher(model)
    if kind == "views":
        return ViewsTeacher(model, data, device, cache_dir=cache_dir, key=key, views=views, seed=seed, topk=topk,
                            log=log, feature_budget_mb=feature_budget_mb)
    return CachedTeacher(model, data, device, cache_dir=cache_dir, key=key)
