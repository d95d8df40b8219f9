"""Self-contained HTML report of a study: plotly.js inlined once, no external resources."""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optuna.study import Study

from . import data

__all__ = ["build_report", "render_report"]

SECTIONS = {
    "summary": "Summary",
    "leaderboard": "Leaderboard",
    "history": "Optimisation history",
    "intermediate": "Intermediate values",
    "parallel": "Parallel coordinates",
    "importances": "Parameter importances",
    "proxy": "Proxy score vs accuracy",
    "pareto": "Pareto front",
    "trials": "All trials",
}

CSS = """
:root { --fg:#1f2933; --muted:#6b7785; --line:#e3e7ec; --bg:#f7f9fb; --accent:#1f77b4; --pos:#1a7f37; --neg:#c62828; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#fff; border-bottom:1px solid var(--line); padding:18px 32px 10px; }
header h1 { margin:0 0 4px; font-size:22px; }
header .meta { color:var(--muted); font-size:12px; }
nav { margin-top:10px; display:flex; flex-wrap:wrap; gap:4px 14px; font-size:13px; }
nav a { color:var(--accent); text-decoration:none; }
nav a:hover { text-decoration:underline; }
main { max-width:1280px; margin:0 auto; padding:16px 32px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:16px 0; }
section h2 { margin:0 0 12px; font-size:17px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(240px, 1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.card h3 { margin:0 0 6px; font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.card .big { font-size:20px; font-weight:600; }
.kv { border-collapse:collapse; width:100%; }
.kv td { padding:1px 0; vertical-align:top; }
.kv td:first-child { color:var(--muted); padding-right:10px; white-space:nowrap; }
.scroll { overflow-x:auto; }
table.data { border-collapse:collapse; width:100%; font-size:13px; font-variant-numeric:tabular-nums; }
table.data th, table.data td { border-bottom:1px solid var(--line); padding:5px 8px; text-align:left; white-space:nowrap; }
table.data th { background:#f0f3f6; position:sticky; top:0; font-weight:600; }
table.data tbody tr:hover { background:#f5f8fc; }
table.data td.num { text-align:right; }
tr.baseline { background:#fbf7e9; }
tr.best td { font-weight:600; }
.tag { display:inline-block; padding:0 6px; border-radius:9px; font-size:11px; font-weight:600; background:#e8eef5; }
.tag.ce { background:#e6e6e6; } .tag.kd { background:#dcefdc; }
.pos { color:var(--pos); } .neg { color:var(--neg); }
.note { color:var(--muted); font-style:italic; margin:4px 0; }
details summary { cursor:pointer; color:var(--accent); }
footer { color:var(--muted); font-size:12px; text-align:center; padding:16px; }
"""


# ---------------------------------------------------------------------------------------------- formatting


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def _human(v: Any) -> str:
    """1234567 -> 1.23M."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "–" if v is None else str(v)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _secs(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "–"
    if v < 120:
        return f"{v:.1f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.2f} h"


def _gain_html(v: float | None) -> str:
    if v is None:
        return "–"
    cls = "pos" if v > 0 else "neg" if v < 0 else ""
    return f'<span class="{cls}">{_e(f"{v:+.4f}")}</span>'


def _param(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _tag(tag: str | None) -> str:
    return f'<span class="tag {_e(tag)}">{_e(tag.upper())}</span>' if tag else ""


def _kv(pairs: Sequence[tuple[str, str]]) -> str:
    """Rows of (escaped label, already-escaped html)."""
    return (
        '<table class="kv">'
        + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in pairs)
        + "</table>"
    )


def _card(title: str, big: str, pairs: Sequence[tuple[str, str]] = ()) -> str:
    return f'<div class="card"><h3>{_e(title)}</h3><div class="big">{big}</div>{_kv(pairs) if pairs else ""}</div>'


def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_e(SECTIONS[key])}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# ---------------------------------------------------------------------------------------------- sections


def _summary_html(s: Mapping[str, Any]) -> str:
    obj = s["objectives"][0]
    cards = []
    teacher = s.get("teacher")
    if isinstance(teacher, Mapping) and teacher:
        pairs = []
        for k, v in teacher.items():
            if k == "name":
                continue
            pairs.append(
                (k, _e(_human(v) if k in ("params", "flops") else _num(v) if isinstance(v, float) else v))
            )
        cards.append(_card("Teacher", _e(teacher.get("name", "–")), pairs))
    elif teacher:
        cards.append(_card("Teacher", _e(teacher)))
    else:
        cards.append(_card("Teacher", "–", [("info", "not recorded")]))
    for tag, label in (("ce", "CE-only baseline"), ("kd", "KD baseline")):
        b = s["baselines"].get(tag)
        if b is None:
            cards.append(_card(label, "–", [("status", "not run")]))
        else:
            pairs = [("trial", _e(b["number"])), ("state", _e(b["state"].lower()))]
            if b.get("student"):
                pairs.append(("student", _e(b["student"])))
            cards.append(_card(label, _e(_num(b["value"])), pairs))
    best = s.get("best_searched")
    if best is not None:
        pairs = [
            ("trial", _e(best["number"])),
            ("gain vs CE", _gain_html(best["gain_vs_ce"])),
            ("gain vs KD", _gain_html(best["gain_vs_kd"])),
        ]
        if s.get("best_baseline"):
            pairs.append(("overall best", f"trial {_e(s['best_trial'])} {_tag(s['best_baseline'])}"))
        cards.append(_card(f"Best searched trial ({obj})", _e(_num(best["value"])), pairs))
    else:
        cards.append(_card(f"Best searched trial ({obj})", "–", [("info", "no completed searched trial")]))
    counts = s["counts"]
    pairs = [
        (k.lower(), _e(v)) for k, v in counts.items() if v or k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
    ]
    cards.append(_card("Trials", _e(s["n_trials"]), pairs))
    pairs = [("train time", _e(_secs(s.get("total_train_time_s"))))]
    if s.get("pareto_size") is not None:
        pairs.append(("Pareto-optimal trials", _e(s["pareto_size"])))
    cards.append(_card("Total epochs trained", _e(f"{s['total_epochs']:,}"), pairs))
    study_pairs = [
        ("study", _e(s.get("study_name") or "–")),
        ("dataset", _e(s.get("dataset") or "–")),
        ("search space", _e(s.get("space") or "–")),
        (
            "objectives",
            _e(", ".join(f"{n} ({d})" for n, d in zip(s["objectives"], s["directions"], strict=True))),
        ),
        ("autokd", _e(s.get("autokd_version") or "–")),
    ]
    cards.append(_card("Study", _e(s.get("study_name") or "–"), study_pairs[1:]))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _leaderboard_html(rows: Sequence[Mapping[str, Any]], s: Mapping[str, Any]) -> str:
    if not rows:
        return _note("no completed trials yet")
    objectives = s["objectives"]
    multi = s["multi_objective"]
    pnames = sorted({k for r in rows for k in r["params"]} - {"student"})
    head = ["#", "trial", "", objectives[0]]
    if multi:
        head += objectives[1:]
    head += ["gain vs CE", "gain vs KD", "student", "params", "FLOPs", "latency (ms)", "epochs", "train time"]
    head += pnames
    best_searched = (s.get("best_searched") or {}).get("number")
    body = []
    for r in rows:
        cls = "baseline" if r["is_baseline"] else "best" if r["number"] == best_searched else ""
        cells = [
            f'<td class="num">{_e(r["rank"])}</td>',
            f'<td class="num">{_e(r["number"])}</td>',
            f"<td>{_tag(r['baseline'])}</td>",
            f'<td class="num">{_e(_num(r["value"]))}</td>',
        ]
        if multi:
            cells += [f'<td class="num">{_e(_num(v))}</td>' for v in r["values"][1:]]
        cells += [
            f'<td class="num">{_gain_html(r["gain_vs_ce"])}</td>',
            f'<td class="num">{_gain_html(r["gain_vs_kd"])}</td>',
            f"<td>{_e(r['student'] if r['student'] is not None else '–')}</td>",
            f'<td class="num">{_e(_human(r["n_params"]))}</td>',
            f'<td class="num">{_e(_human(r["flops"]))}</td>',
            f'<td class="num">{_e(_num(r["latency_ms"], 2))}</td>',
            f'<td class="num">{_e(_num(r["epochs"]))}</td>',
            f'<td class="num">{_e(_secs(r["train_time_s"]))}</td>',
        ]
        cells += [f"<td>{_e(_param(r['params'].get(p)))}</td>" for p in pnames]
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    thead = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    return (
        '<div class="scroll"><table class="data" id="leaderboard-table">'
        f"<thead>{thead}</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _trials_html(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return _note("no trials")
    skip = {"values", "datetime_start", "datetime_complete"}
    keys = [k for k in rows[0] if k not in skip and not k.startswith("user_attrs_recipe.")]
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    short = [k.removeprefix("params_").removeprefix("user_attrs_") for k in keys]
    labels = [s if short.count(s) == 1 else k for s, k in zip(short, keys, strict=True)]
    thead = "<tr>" + "".join(f"<th>{_e(label)}</th>" for label in labels) + "</tr>"
    body = []
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            if k == "duration_s":
                text = _secs(v)
            elif k == "value" or isinstance(v, int):
                text = _num(v)
            else:
                text = _param(v)
            cells.append(f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<details><summary>show {len(rows)} trials</summary>"
        f'<div class="scroll"><table class="data">'
        f"<thead>{thead}</thead><tbody>{''.join(body)}</tbody></table></div></details>"
    )


def _fig_html(fig: Any, key: str, note: str) -> str:
    if fig is None:
        return _note(note)
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{key}",
        config={"displaylogo": False, "responsive": True},
    )


# ---------------------------------------------------------------------------------------------- page


def render_report(
    study: Study | Sequence[Any],
    *,
    title: str | None = None,
    directions: Sequence[Any] | None = None,
    top_k: int = 20,
) -> str:
    """The report page as one HTML string (see :func:`build_report`)."""
    import plotly.offline

    from . import figures

    s = data.summary(study, directions)
    objective = s["objectives"][0]
    imp = data.importances(study, directions)
    proxy_rows = data.proxy_vs_accuracy(study, directions)
    sections = [
        _section("summary", _summary_html(s)),
        _section("leaderboard", _leaderboard_html(data.leaderboard(study, top_k, directions=directions), s)),
        _section(
            "history",
            _fig_html(
                figures.fig_history(data.history(study, directions), objective=objective),
                "history",
                figures.NOTES["history"],
            ),
        ),
        _section(
            "intermediate",
            _fig_html(
                figures.fig_intermediate(data.intermediate(study, directions), objective=objective),
                "intermediate",
                figures.NOTES["intermediate"],
            ),
        ),
        _section(
            "parallel",
            _fig_html(
                figures.fig_parallel(data.parallel(study, directions)), "parallel", figures.NOTES["parallel"]
            ),
        ),
        _section(
            "importances",
            _fig_html(
                figures.fig_importances(imp), "importances", imp.reason or figures.NOTES["importances"]
            ),
        ),
    ]
    if proxy_rows:
        sections.append(
            _section("proxy", _fig_html(figures.fig_proxy(proxy_rows), "proxy", figures.NOTES["proxy"]))
        )
    if s["multi_objective"]:
        fig = figures.fig_pareto(data.pareto(study, directions), objectives=s["objectives"])
        sections.append(_section("pareto", _fig_html(fig, "pareto", figures.NOTES["pareto"])))
    sections.append(_section("trials", _trials_html(data.trials_table(study, directions))))

    present = [k for k in SECTIONS if f'<section id="{k}">' in "".join(sections)]
    nav = "".join(f'<a href="#{k}">{_e(SECTIONS[k])}</a>' for k in present)
    name = s.get("study_name") or "study"
    title = title or f"autokd report — {name}"
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta = f"study {_e(name)} · {_e(s['n_trials'])} trials · generated {_e(now)}"
    if s.get("autokd_version"):
        meta += f" · autokd {_e(s['autokd_version'])}"
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<header><h1>{_e(title)}</h1><div class="meta">{meta}</div><nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>generated by autokd · self-contained, works offline</footer>
</body>
</html>
"""


def build_report(
    study: Study | Sequence[Any],
    path: str | Path,
    *,
    title: str | None = None,
    directions: Sequence[Any] | None = None,
    top_k: int = 20,
) -> Path:
    """Write one self-contained HTML report (plotly.js inlined, no CDN) and return its path.

    ``path`` may be an existing directory (then ``report.html`` inside it); parents are created.
    ``study`` may also be a list of FrozenTrial with ``directions``.
    """
    out = Path(path)
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(study, title=title, directions=directions, top_k=top_k), encoding="utf-8")
    return out
