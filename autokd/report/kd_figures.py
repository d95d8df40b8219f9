"""Distillation views (gain over the matched in-study KD baseline by loss family, scheme, student and
temperature) and Optuna's own views (slice, EDF, rank, timeline, contour) of the searched trials.

Built from :mod:`autokd.report.data` rows; this module imports plotly and optuna.visualization.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from .figures import _layout, _wrap

__all__ = ["GAIN_TITLE", "fig_gain_by", "fig_gain_vs_temperature", "optuna_views"]

GAIN_TITLE = "gain over the in-study KD baseline with the same student (points)"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _hover(r: Mapping[str, Any]) -> str:
    return f"trial {r['number']}<br>" + _wrap(str(r.get("description") or ""))


def fig_gain_by(rows: Sequence[Mapping[str, Any]], key: str, title: str) -> go.Figure | None:
    """Box and strip of ``gain_vs_kd`` (points) per value of ``key`` (loss family, scheme, student)."""
    rows = [r for r in rows if r.get("gain_vs_kd") is not None and r.get(key) is not None]
    if not rows:
        return None
    fig = go.Figure()
    groups = sorted({str(r[key]) for r in rows})
    for i, g in enumerate(groups):
        sub = [r for r in rows if str(r[key]) == g]
        fig.add_trace(go.Box(
            y=[r["gain_vs_kd"] for r in sub], name=f"{g} (n={len(sub)})", boxpoints="all", jitter=0.4,
            pointpos=0, marker={"color": PALETTE[i % len(PALETTE)], "size": 7, "opacity": 0.75},
            line={"width": 1}, text=[_hover(r) for r in sub],
            hovertemplate="%{text}<br>gain %{y:+.2f} points<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#2ca02c", "dash": "dot", "width": 1})
    return _layout(fig, title, key.replace("_", " "), "gain vs KD (points)", showlegend=False)


def fig_gain_vs_temperature(rows: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """``gain_vs_kd`` (points) against the first term's temperature, coloured by loss."""
    rows = [r for r in rows if r.get("gain_vs_kd") is not None and r.get("temperature") is not None]
    if not rows:
        return None
    fig = go.Figure()
    for i, loss in enumerate(sorted({str(r.get("losses")) for r in rows})):
        sub = [r for r in rows if str(r.get("losses")) == loss]
        fig.add_trace(go.Scatter(
            x=[r["temperature"] for r in sub], y=[r["gain_vs_kd"] for r in sub], mode="markers", name=loss,
            marker={"color": PALETTE[i % len(PALETTE)], "size": 8, "opacity": 0.8}, text=[_hover(r) for r in sub],
            hovertemplate="%{text}<br>T = %{x:.3g}: gain %{y:+.2f} points<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#2ca02c", "dash": "dot", "width": 1})
    return _layout(fig, "Gain over KD vs temperature (first term's), by loss", "temperature",
                   "gain vs KD (points)")


def optuna_views(study: Any, params: Sequence[str], *, objective: str = "val_acc", multi: bool = False,
                 pairs: int = 3) -> dict[str, tuple[go.Figure | None, str]]:
    """Optuna's slice, EDF, rank, timeline and contour views of ``study`` (the searched trials only: baselines
    have no parameters), restricted to ``params`` (the most important first). Returns ``{key: (figure or None,
    title or the reason it is missing)}``."""
    import optuna.visualization as vis

    target: Callable[[Any], float] | None = (lambda t: t.values[0]) if multi else None
    kw: dict[str, Any] = {"target": target, "target_name": objective} if multi else {"target_name": objective}
    top = list(params)
    views: dict[str, tuple[str, Callable[[], go.Figure]]] = {
        "slice": ("Slice: objective against each parameter", lambda: vis.plot_slice(study, params=top, **kw)),
        "edf": ("Empirical distribution function of the objective", lambda: vis.plot_edf(study, **kw)),
        "rank": ("Rank: parameter pairs coloured by objective rank",
                 lambda: vis.plot_rank(study, params=top[:4], **kw)),
        "timeline": ("Timeline of the searched trials", lambda: vis.plot_timeline(study)),
    }
    for a, b in list(itertools.combinations(top, 2))[:pairs]:
        views[f"contour:{a}|{b}"] = (f"Contour: {a} × {b}",
                                     lambda a=a, b=b: vis.plot_contour(study, params=[a, b], **kw))
    out: dict[str, tuple[go.Figure | None, str]] = {}
    for key, (title, make) in views.items():
        if key != "timeline" and key != "edf" and not top:
            out[key] = (None, f"{title}: no searched parameters")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
        except Exception as e:  # noqa: BLE001 - a view Optuna cannot draw becomes a note on the page
            out[key] = (None, f"{title}: {type(e).__name__}: {e}")
            continue
        fig.update_layout(title={"text": title, "x": 0.01}, template="plotly_white",
                          height=max(380, fig.layout.height or 0))
        out[key] = (fig, title)
    return out
