"""Rank candidate students of a search space training-free with zero-cost proxies (``autokd proxies``)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..proxies import PROXIES, proxy_batch
from ..proxies.score import build_student, score_student
from .students import StudentCandidate, sample_students

__all__ = ["score_candidates", "rank_rows", "write_csv", "resolve_parts"]


def resolve_parts(ctx_or_parts: Any) -> tuple[Any, Any, Any]:
    """``(data, teacher, space)`` from a :class:`~autokd.context.StudyContext`, a mapping with keys
    ``data``, ``teacher`` (optional) and ``space`` (optional), or a ``(data, teacher)`` tuple."""
    if isinstance(ctx_or_parts, dict):
        if "data" not in ctx_or_parts:
            raise ConfigError("score_candidates: the parts mapping needs 'data'")
        return ctx_or_parts["data"], ctx_or_parts.get("teacher"), ctx_or_parts.get("space")
    if isinstance(ctx_or_parts, (tuple, list)):
        data, teacher = (list(ctx_or_parts) + [None])[:2]
        return data, teacher, None
    return ctx_or_parts.data, getattr(ctx_or_parts, "teacher", None), getattr(ctx_or_parts, "space", None)


def score_candidates(ctx_or_parts: Any, space: Any = None, *, n: int = 64,
                     proxies: Sequence[str] | None = None, seed: int = 0, batch_size: int = 64,
                     candidates: Sequence[StudentCandidate] | None = None,
                     progress: Callable[[int, int, dict], None] | None = None) -> list[dict[str, Any]]:
    """Score ``n`` distinct students sampled from ``space`` (all of them if it holds at most ``n``)
    with every proxy in ``proxies`` (default: all registered), training-free, on ONE batch of the training
    split (``batch_size``, shuffled with ``seed``); each student is initialised with ``seed``.

    Returns one row per student, in sampling order: ``student`` (label), ``option``, ``name``, ``kwargs``,
    ``params``, then ``<proxy>`` (score, higher = predicted better) and ``<proxy>_time_s`` per proxy, and
    ``errors`` (proxy -> message, for proxies that failed on that student). ``progress(i, total, row)`` is
    called after each student.
    """
    data, teacher, ctx_space = resolve_parts(ctx_or_parts)
    space = space if space is not None else ctx_space
    if space is None and candidates is None:
        raise ConfigError("score_candidates: no search space given")
    names = list(proxies) if proxies else PROXIES.names()
    for name in names:
        PROXIES.canonical(name, where="proxies")
        if PROXIES.meta(name).get("needs_teacher") and teacher is None:
            raise ConfigError(f"proxy {name!r} compares students with the teacher, and there is no teacher")
    cands = list(candidates) if candidates is not None else sample_students(space, n, seed=seed)
    x, y = proxy_batch(data, batch_size, seed=seed)
    device = next((p.device for p in teacher.parameters()), None) if teacher is not None else None
    if device is not None:
        x, y = x.to(device), y.to(device)
    rows: list[dict[str, Any]] = []
    for i, cand in enumerate(cands):
        student = build_student(cand, data.num_classes, data.input_shape[0], seed=seed, device=device)
        scores, times, errors = score_student(student, teacher, (x, y), names, seed=seed)
        row: dict[str, Any] = {**cand.to_dict(), "params": 0}
        row.update(scores)
        row["params"] = sum(p.numel() for p in student.parameters())  # an int, even when "params" is a proxy
        row.update({f"{k}_time_s": v for k, v in times.items()})
        row["errors"] = errors
        rows.append(row)
        if progress is not None:
            progress(i, len(cands), row)
    return rows


def rank_rows(rows: Sequence[dict[str, Any]], proxy: str) -> list[dict[str, Any]]:
    """Rows sorted by ``proxy``, best first (NaN last)."""
    def key(r: dict[str, Any]) -> float:
        v = r.get(proxy, float("nan"))
        return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return sorted(rows, key=key, reverse=True)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One line per student; ``kwargs`` and ``errors`` as JSON; the columns of the first row first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                        for k, v in r.items()})
    return path
