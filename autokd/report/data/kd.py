"""Distillation-specific rows: what each searched trial distilled (loss family, losses, scheme, student,
temperature) beside its gain over the in-study KD and CE-only baselines trained with the same student.

In-study gains compare with baselines trained with the search space's default optimiser, not like-for-like
(the final retrain is); the report labels them so.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ...search import trial_record as tr
from .view import DirectionLike, StudyLike, baseline, objective, student, view_of

__all__ = ["loss_level", "recipe_facts", "kd_rows"]


@functools.lru_cache(maxsize=256)
def loss_level(name: str) -> str | None:
    """The loss registry's ``level`` of a loss (``logit``, ``feature``, ``relation``, ...), or None if unknown.
    (Imports the loss library, hence torch, on first call.)"""
    from ... import losses

    try:
        return str(losses.LOSSES.meta(name).get("level")) or None
    except Exception:  # noqa: BLE001 - a study written with a loss this version does not know
        return None


def recipe_facts(t: Any) -> dict[str, Any]:
    """``{losses, family, scheme, temperature, ce_weight, lr}`` of the recipe a trial trained (None each when
    it recorded no recipe). ``family`` joins the distinct levels of the terms (``logit``, ``logit+feature``;
    ``ce only`` without terms); ``temperature`` is the first term's that has one."""
    d = tr.recipe_dict_of(t)
    out: dict[str, Any] = {"losses": None, "family": None, "scheme": None, "temperature": None,
                           "ce_weight": None, "lr": None}
    if not d:
        return out
    terms = d.get("terms") or []
    names = [str(term.get("loss")) for term in terms]
    levels: list[str] = []
    for n in names:
        lv = loss_level(n) or "unknown"
        if lv not in levels:
            levels.append(lv)
    temps = [term.get("params", {}).get("temperature") for term in terms]
    out.update(losses="+".join(names) if names else "ce only", family="+".join(levels) if levels else "ce only",
               scheme=(d.get("scheme") or {}).get("name"),
               temperature=next((float(x) for x in temps if isinstance(x, (int, float))), None),
               ce_weight=d.get("ce_weight"), lr=(d.get("optim") or {}).get("lr"))
    return out


def kd_rows(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Completed searched trials: number, value, gain_vs_kd, gain_vs_ce (points, i.e. accuracy × 100, over the
    in-study baselines with the same student), student, description and :func:`recipe_facts`."""
    view = view_of(study, directions)
    rows = []
    for t in view.complete():
        if baseline(t) is not None:
            continue
        g = view.gains(t)
        rows.append({"number": t.number, "value": objective(t),
                     "gain_vs_kd": None if g["gain_vs_kd"] is None else 100.0 * g["gain_vs_kd"],
                     "gain_vs_ce": None if g["gain_vs_ce"] is None else 100.0 * g["gain_vs_ce"],
                     "student": student(t), "description": tr.description_of(t), **recipe_facts(t)})
    return rows
