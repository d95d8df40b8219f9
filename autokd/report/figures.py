"""Plotly figures built from the outputs of :mod:`autokd.report.data`.

Each ``fig_*`` returns a :class:`plotly.graph_objects.Figure`, or None when there is nothing to draw.
This module imports plotly; ``autokd.report`` only imports it lazily (through :func:`build_report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from .data import rank_correlation

__all__ = [
    "NOTES",
    "fig_history",
    "fig_importances",
    "fig_intermediate",
    "fig_parallel",
    "fig_pareto",
    "fig_proxy",
]

NOTES = {
    "history": "no completed trials yet",
    "intermediate": "no trial reported intermediate values",
    "parallel": "parallel coordinates need completed trials with parameters",
    "importances": "parameter importances need ≥2 completed trials with varying parameters",
    "proxy": "no trial has both a proxy score and a validation accuracy",
    "pareto": "no completed trials for the Pareto front",
}

SEARCHED = "#1f77b4"
BEST = "#ff7f0e"
BASE_STYLE = {"ce_only": ("#7f7f7f", "diamond", "CE baseline"), "kd": ("#2ca02c", "square", "KD baseline")}
STATE_STYLE = {  # colour, dash, width
    "COMPLETE": (SEARCHED, "solid", 1.5),
    "PRUNED": ("#9e9e9e", "dash", 1.0),
    "FAIL": ("#d62728", "dot", 1.0),
    "RUNNING": (BEST, "solid", 1.5),
    "WAITING": ("#bdbdbd", "dot", 1.0),
}


def _layout(fig: go.Figure, title: str, x: str, y: str, **kw: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=kw.pop("height", 440),
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.18},
        xaxis_title=x,
        yaxis_title=y,
        **kw,
    )
    return fig


def _label(row: Mapping[str, Any]) -> str:
    tag = row.get("baseline")
    text = f"trial {row['number']}" + (f" ({BASE_STYLE[tag][2] if tag in BASE_STYLE else tag})" if tag else "")
    if row.get("description"):
        text += "<br>" + _wrap(str(row["description"]))
    return text


def _wrap(text: str, width: int = 70) -> str:
    """Hover text broken at spaces every ~``width`` characters (plotly hover boxes do not wrap)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join([*lines, line])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fig_history(rows: Sequence[Mapping[str, Any]], *, objective: str = "val_acc",
                pruned: Sequence[Mapping[str, Any]] = (), student: str | None = None) -> go.Figure | None:
    """Objective per completed trial, the best-so-far step line and the baselines trained with ``student``
    (the best trial's; all baselines when None) as lines; ``pruned`` trials (``number``, ``value``: their last
    reported value) faint. The recipe text is on hover."""
    if not rows:
        return None
    fig = go.Figure()
    if pruned:
        fig.add_trace(go.Scatter(
            x=[r["number"] for r in pruned], y=[r["value"] for r in pruned], mode="markers",
            name="pruned (last reported value)", marker={"color": "#9e9e9e", "size": 6, "opacity": 0.35},
            text=[_label(r) for r in pruned], hovertemplate="%{text}<br>" + objective + "=%{y:.4g}<extra></extra>"))
    searched = [r for r in rows if not r.get("baseline")]
    if searched:
        fig.add_trace(go.Scatter(
            x=[r["number"] for r in searched], y=[r["value"] for r in searched], mode="markers", name="trial",
            marker={"color": SEARCHED, "size": 7, "opacity": 0.8}, text=[_label(r) for r in searched],
            hovertemplate="%{text}<br>" + objective + "=%{y:.4g}<extra></extra>"))
    for tag, (color, symbol, name) in BASE_STYLE.items():
        base = [r for r in rows if r.get("baseline") == tag and (student is None or r.get("student") == student)]
        if not base:
            continue
        label = name + (f" ({student})" if student else "")
        fig.add_trace(go.Scatter(
            x=[r["number"] for r in base], y=[r["value"] for r in base], mode="markers", name=label,
            marker={"color": color, "size": 11, "symbol": symbol, "line": {"width": 1, "color": "#333"}},
            text=[_label(r) for r in base], hovertemplate="%{text}<br>" + objective + "=%{y:.4g}<extra></extra>"))
        fig.add_hline(y=base[0]["value"], line={"color": color, "dash": "dot", "width": 1})
    fig.add_trace(go.Scatter(
        x=[r["number"] for r in rows], y=[r["best"] for r in rows], mode="lines", name="best so far",
        line={"color": BEST, "width": 2, "shape": "hv"}, hovertemplate="best so far=%{y:.4g}<extra></extra>"))
    return _layout(fig, "Optimisation history", "trial", objective)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def fig_parallel(par: Mapping[str, Any]) -> go.Figure | None:
    """Parallel coordinates of params and objective 0; categorical params on integer ticks with labels,
    log-scale params on log10 axes, missing (conditional) params on an ``n/a`` tick."""
    rows = par.get("rows") or []
    names = par.get("params") or []
    if not rows or not names:
        return None
    categorical: Mapping[str, list[str]] = par.get("categorical") or {}
    axis: Mapping[str, str] = par.get("labels") or {}
    log = set(par.get("log") or [])
    dims = []
    for name in names:
        raw = [r["params"].get(name) for r in rows]
        missing = any(v is None for v in raw)
        if name in categorical:
            labels = list(categorical[name])
            for v in raw:
                if v is not None and v not in labels:
                    labels.append(v)
            if missing:
                labels.append("n/a")
            index = {lab: i for i, lab in enumerate(labels)}
            vals = [index["n/a" if v is None else v] for v in raw]
            dims.append(
                {
                    "label": axis.get(name, name),
                    "values": vals,
                    "tickvals": list(range(len(labels))),
                    "ticktext": labels,
                    "range": [-0.25, len(labels) - 0.75] if len(labels) > 1 else [-1, 1],
                }
            )
            continue
        is_log = name in log and all(v is None or v > 0 for v in raw)
        num = [None if v is None else (math.log10(v) if is_log else float(v)) for v in raw]
        present = [v for v in num if v is not None]
        lo, hi = min(present), max(present)
        short = axis.get(name, name)
        dim: dict[str, Any] = {"label": f"{short} (log)" if is_log else short}
        if is_log or missing:
            ticks = _ticks(lo, hi)
            text = [_fmt(10**t if is_log else t) for t in ticks]
            if missing:
                sentinel = lo - 0.15 * ((hi - lo) or 1.0)
                num = [sentinel if v is None else v for v in num]
                ticks, text = [sentinel, *ticks], ["n/a", *text]
                lo = sentinel
            dim.update(tickvals=ticks, ticktext=text)
        if hi <= lo:
            lo, hi = lo - 1.0, hi + 1.0
        dim.update(values=num, range=[lo, hi])
        dims.append(dim)
    objective = par.get("objective") or "value"
    values = [r["value"] for r in rows]
    dims.append({"label": objective, "values": values})
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": values,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": objective}},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(
        title={"text": "Parallel coordinates" + (f" (the {len(names)} most important parameters)"
                                                 if par.get("top_k") else ""), "x": 0.01},
        template="plotly_white",
        height=480,
        margin={"l": 80, "r": 80, "t": 80, "b": 40},
    )
    return fig


def fig_importances(imp: Mapping[str, float]) -> go.Figure | None:
    """Horizontal bars, most important parameter on top; the title names the method and the number of trials
    (``imp.method``, ``imp.n`` when given)."""
    if not imp:
        return None
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in items],
            y=[k for k, _ in items],
            orientation="h",
            marker={"color": SEARCHED},
            text=[f"{v:.3f}" for _, v in items],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    title = "Parameter importances"
    if getattr(imp, "method", None):
        title += f" — {imp.method}, n = {imp.n} completed searched trials"
    return _layout(fig, title, "importance (normalised)", "", height=max(260, 60 + 32 * len(items)))


def fig_intermediate(rows: Sequence[Mapping[str, Any]], *, objective: str = "val_acc") -> go.Figure | None:
    """One line per trial (value per epoch); pruned dashed grey, failed dotted red, baselines highlighted."""
    rows = [r for r in rows if r.get("points")]
    if not rows:
        return None
    fig = go.Figure()
    shown: set[str] = set()
    for r in rows:
        tag = r.get("baseline")
        if tag in BASE_STYLE:
            color, _, group = BASE_STYLE[tag]
            dash, width = "solid", 2.5
        else:
            color, dash, width = STATE_STYLE.get(r["state"], STATE_STYLE["COMPLETE"])
            group = r["state"].lower()
        hover = _label(r) + f" [{r['state'].lower()}]"
        if r.get("prune_reason"):
            hover += f"<br>{r['prune_reason']}"
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in r["points"]],
                y=[p[1] for p in r["points"]],
                mode="lines+markers",
                name=group,
                legendgroup=group,
                showlegend=group not in shown,
                line={"color": color, "dash": dash, "width": width},
                marker={"size": 4, "color": color},
                opacity=0.9 if tag else 0.7,
                text=[hover] * len(r["points"]),
                hovertemplate="%{text}<br>epoch %{x}: %{y:.4g}<extra></extra>",
            )
        )
        shown.add(group)
    return _layout(fig, "Intermediate values (each trial's FIRST seed: the curve the pruner watches)", "epoch",
                   objective)


def fig_proxy(rows: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Scatter of zero-cost proxy score vs validation accuracy, with Spearman rho in the title."""
    if not rows:
        return None
    fig = go.Figure()
    for state in sorted({r["state"] for r in rows}):
        sub = [r for r in rows if r["state"] == state]
        color = STATE_STYLE.get(state, STATE_STYLE["COMPLETE"])[0]
        fig.add_trace(
            go.Scatter(
                x=[r["proxy_score"] for r in sub],
                y=[r["val_acc"] for r in sub],
                mode="markers",
                name=state.lower(),
                marker={"color": color, "size": 8, "opacity": 0.8},
                text=[_label(r) for r in sub],
                hovertemplate="%{text}<br>proxy=%{x:.4g}<br>val_acc=%{y:.4g}<extra></extra>",
            )
        )
    rho = rank_correlation([r["proxy_score"] for r in rows], [r["val_acc"] for r in rows])
    proxies = sorted({r["proxy"] for r in rows if r.get("proxy")})
    title = f"Proxy score ({', '.join(proxies) or 'zero-cost proxy'}) vs final accuracy" + (
        f" (Spearman ρ = {rho:.3f}, n = {len(rows)})" if rho is not None else ""
    )
    return _layout(fig, title, f"{', '.join(proxies) or 'proxy'} score", "val_acc (completed trials)")


def fig_pareto(
    rows: Sequence[Mapping[str, Any]], *, objectives: Sequence[str] = ("val_acc", "params")
) -> go.Figure | None:
    """Objective 0 (y) vs objective 1 (x); Pareto-optimal trials coloured and joined, others grey."""
    rows = [r for r in rows if len(r.get("values") or []) >= 2]
    if not rows:
        return None
    y_name, x_name = objectives[0], objectives[1]
    fig = go.Figure()
    for on_front, name, color, size in ((False, "dominated", "#bdbdbd", 7), (True, "Pareto front", BEST, 10)):
        sub = sorted((r for r in rows if bool(r.get("on_front")) == on_front), key=lambda r: r["values"][1])
        if not sub:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r["values"][1] for r in sub],
                y=[r["values"][0] for r in sub],
                mode="lines+markers" if on_front else "markers",
                name=name,
                line={"color": color, "shape": "hv"} if on_front else None,
                marker={"color": color, "size": size, "line": {"width": 0.5, "color": "#333"}},
                text=[_label(r) + (f"<br>{r['student']}" if r.get("student") else "") for r in sub],
                hovertemplate="%{text}<br>" + x_name + "=%{x:.4g}<br>" + y_name + "=%{y:.4g}<extra></extra>",
            )
        )
    for tag, (color, symbol, name) in BASE_STYLE.items():
        base = [r for r in rows if r.get("baseline") == tag]
        if base:
            fig.add_trace(
                go.Scatter(
                    x=[r["values"][1] for r in base],
                    y=[r["values"][0] for r in base],
                    mode="markers",
                    name=name,
                    marker={
                        "color": color,
                        "size": 12,
                        "symbol": symbol,
                        "line": {"width": 1, "color": "#333"},
                    },
                    text=[_label(r) for r in base],
                    hovertemplate="%{text}<br>"
                    + x_name
                    + "=%{x:.4g}<br>"
                    + y_name
                    + "=%{y:.4g}<extra></extra>",
                )
            )
    xs = [r["values"][1] for r in rows]
    use_log = all(x > 0 for x in xs) and max(xs) / min(xs) > 20
    fig = _layout(fig, f"Pareto front: {y_name} vs {x_name}", x_name, y_name)
    if use_log:
        fig.update_xaxes(type="log")
    return fig
