"""Where the search layer reaches the storage under Optuna's cache: :func:`backend_of`, and
:func:`one_study_read` -- one read of a study's trials serving every read of them in a short step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["backend_of", "one_study_read"]


def backend_of(storage: Any) -> Any:
    """The storage under Optuna's cache (``_CachedStorage`` wraps an RDB storage); for Optuna's journal
    storage its journal backend; else ``storage``. Callers look for optional methods on it (``telling``,
    ``creating``, ``one_study_read``: a lean RDB storage's), so anything else simply lacks them."""
    return getattr(storage, "_backend", storage)


@contextlib.contextmanager
def one_study_read(study: Any) -> Iterator[None]:
    """Within: where the study's storage offers it (``LeanRDBStorage.one_study_read``), the study's trials are
    read from the database once and this thread's later reads of them answered from that read, until it
    writes; elsewhere, nothing changes. For steps that read the study several times within milliseconds: a
    worker's decision and ask under the study lock (the decision's read, then the sampler's at the new
    trial), a trial's suggestion (a sampler call each)."""
    scope = getattr(backend_of(study._storage), "one_study_read", None)
    if scope is None:
        yield
        return
    with scope(study._study_id):
        yield
