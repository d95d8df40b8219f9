"""Self-contained HTML report of a study: plotly.js inlined once, no external resources."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optuna.study import Study

from ..files import atomic_write_text
from . import data
from .sections import e, evidence_html, leaderboard_html, note, summary_html, trials_html

__all__ = ["build_report", "render_report"]

SECTIONS = {
    "evidence": "Best recipe & evidence",
    "summary": "Search summary",
    "leaderboard": "Leaderboard",
    "kd": "Distillation: gain over KD",
    "history": "Optimisation history",
    "intermediate": "Intermediate values",
    "parallel": "Parallel coordinates",
    "importances": "Parameter importances",
    "optuna": "Optuna views",
    "proxy": "Proxy score vs accuracy",
    "pareto": "Pareto front",
    "trials": "All trials",
}

JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
    var asc = th.getAttribute('data-dir') !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    var key = function (tr) {
      var td = tr.cells[i]; if (!td) return '';
      var v = td.hasAttribute('data-sort') ? td.getAttribute('data-sort') : td.textContent;
      var n = parseFloat(v); return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase();
    };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === '' && y !== '') return 1; if (y === '' && x !== '') return -1;
      if (typeof x === typeof y) return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      return typeof x === 'number' ? -1 : 1;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.querySelectorAll('input.filter').forEach(function (inp) {
  inp.addEventListener('input', function () {
    var q = inp.value.toLowerCase(), table = document.getElementById(inp.getAttribute('data-table'));
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
    });
  });
});
document.querySelectorAll('input.toggle-opt').forEach(function (box) {
  box.addEventListener('change', function () {
    document.getElementById(box.getAttribute('data-table')).classList.toggle('hide-opt', !box.checked);
  });
});
"""

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
table.sortable th { cursor:pointer; }
table.sortable th[data-dir=asc]::after { content:" ▲"; } table.sortable th[data-dir=desc]::after { content:" ▼"; }
table.hide-opt .opt { display:none; }
table.data td.recipe { white-space:normal; overflow-wrap:anywhere; min-width:280px; max-width:520px; }
.tools { display:flex; gap:16px; align-items:center; margin:4px 0 8px; font-size:13px; }
.tools input[type=search] { padding:4px 8px; border:1px solid var(--line); border-radius:4px; min-width:260px; }
.muted { color:var(--muted); font-weight:normal; }
p.recipe { font-size:16px; font-weight:600; font-family:ui-monospace, Menlo, Consolas, monospace; }
pre { background:#f5f7f9; border:1px solid var(--line); border-radius:4px; padding:8px; overflow-x:auto; }
.warn { background:#fff8e1; border:1px solid #f0d78c; border-radius:6px; padding:8px 12px; margin:8px 0; }
#evidence-table, #comparison-table { width:auto; margin:8px 0; }
ul.facts { color:var(--muted); font-size:13px; margin:6px 0; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(480px, 1fr)); gap:8px; }
tr.best td { font-weight:600; }
.tag { display:inline-block; padding:0 6px; border-radius:9px; font-size:11px; font-weight:600; background:#e8eef5; }
.tag.ce_only { background:#e6e6e6; } .tag.kd { background:#dcefdc; }
.pos { color:var(--pos); } .neg { color:var(--neg); }
.note { color:var(--muted); font-style:italic; margin:4px 0; }
details summary { cursor:pointer; color:var(--accent); }
footer { color:var(--muted); font-size:12px; text-align:center; padding:16px; }
"""


def _fig_html(fig: Any, key: str, why: str) -> str:
    if fig is None:
        return note(why)
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{key}",
                       config={"displaylogo": False, "responsive": True})


def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{e(SECTIONS[key])}</h2>\n{body}\n</section>'


def _best_recipe(study: Study | Sequence[Any], final: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(one line, YAML) of the retrained recipe when there is a retrain, else of the best searched trial."""
    from ..recipe import Recipe
    from ..search import trial_record as tr

    raw = ((final or {}).get("recipes") or {}).get("recipe")
    recipe = None
    if isinstance(raw, dict):
        try:
            recipe = Recipe.from_dict(raw, source="final/results.json")
        except Exception:  # noqa: BLE001 - a results file from another version: show what it says
            recipe = None
    if recipe is None:
        view = data.view_of(study)
        best = next((t for t in view.ranked() if tr.baseline_of(t) is None), None)
        recipe = tr.recipe_of(best) if best is not None else None
    if recipe is None:
        return None, None
    return recipe.describe(), recipe.to_yaml()


def _kd_section(rows: Sequence[Mapping[str, Any]]) -> str:
    from . import kd_figures as kf

    figs = [(kf.fig_gain_by(rows, "family", "Gain over KD by loss family (registry level)"), "kd-family"),
            (kf.fig_gain_by(rows, "scheme", "Gain over KD by training scheme"), "kd-scheme"),
            (kf.fig_gain_by(rows, "student", "Gain over KD by student"), "kd-student"),
            (kf.fig_gain_vs_temperature(rows), "kd-temperature")]
    shown = [_fig_html(f, k, "") for f, k in figs if f is not None]
    if not shown:
        return note("no completed searched trial with a matched in-study KD baseline yet")
    return (note(f"each point: a completed searched trial; {kf.GAIN_TITLE} — {data.IN_STUDY_NOTE}")
            + '<div class="grid2">' + "".join(shown) + "</div>")


def _optuna_section(study: Any, s: Mapping[str, Any], imp: data.Importances, par: Mapping[str, Any]) -> str:
    from . import kd_figures as kf

    searched = data.searched_study(study)
    if not any(t.state.name == "COMPLETE" for t in searched.get_trials(deepcopy=False)):
        return note("no completed searched trial yet")
    params = list(par.get("params") or [])
    views = kf.optuna_views(searched, params, objective=s["objectives"][0], multi=s["multi_objective"])
    wide, grid = [], []
    for key, (fig, title) in views.items():
        (wide if key in ("slice", "rank") else grid).append(
            _fig_html(fig, key.replace(":", "-").replace("|", "-").replace(".", "_"), title))
    return (note("optuna.visualization on the searched trials only (baselines have no parameters); parameters: "
                 f"the {len(params)} most important first") + "".join(wide) + '<div class="grid2">' + "".join(grid)
            + "</div>")


def render_report(study: Study | Sequence[Any], *, title: str | None = None, directions: Sequence[Any] | None = None,
                  top_k: int = 20, final: str | Path | Mapping[str, Any] | None = None,
                  command: str | None = None, parallel_k: int = 6) -> str:
    """The report page as one HTML string (see :func:`build_report`)."""
    import plotly.offline

    from . import figures

    final_data = final if isinstance(final, Mapping) or final is None else data.load_final(final)
    ev = data.evidence(final_data) if final_data else None
    s = data.summary(study, directions)
    objective = s["objectives"][0]
    view = data.view_of(study, directions)
    imp = data.importances(view)
    par = data.parallel(view, top_k=parallel_k, imp=imp)
    par["top_k"] = len(par["params"]) < len(data.parallel(view)["params"])
    recipe_text, recipe_yaml = _best_recipe(study, final_data)
    history = data.history(view)
    inter = data.intermediate(view)
    pruned = [{**r, "value": r["points"][-1][1]} for r in inter if r["state"] == "PRUNED"]
    best_student = (s.get("best_searched") or {}).get("student")
    kd_rows = data.kd_rows(view)
    sections = [
        _section("evidence", evidence_html(ev, s, recipe_text=recipe_text, recipe_yaml=recipe_yaml,
                                           command=command or data.train_command(None))),
        _section("summary", summary_html(s)),
        _section("leaderboard", leaderboard_html(data.leaderboard(view, top_k), s)),
        _section("kd", _kd_section(kd_rows)),
        _section("history", _fig_html(figures.fig_history(history, objective=objective, pruned=pruned,
                                                          student=best_student),
                                      "history", figures.NOTES["history"])),
        _section("intermediate", _fig_html(figures.fig_intermediate(inter, objective=objective), "intermediate",
                                           figures.NOTES["intermediate"])),
        _section("parallel", _fig_html(figures.fig_parallel(par), "parallel", figures.NOTES["parallel"])),
        _section("importances", _fig_html(figures.fig_importances(imp), "importances",
                                          imp.reason or figures.NOTES["importances"])),
    ]
    if isinstance(study, Study) or view.trials:
        sections.append(_section("optuna", _optuna_section(view.study or list(view.trials), s, imp, par)))
    proxy_rows = data.proxy_vs_accuracy(view)
    if proxy_rows:
        sections.append(_section("proxy", _fig_html(figures.fig_proxy(proxy_rows), "proxy", figures.NOTES["proxy"])))
    pareto_rows = data.pareto(view)
    if pareto_rows:
        names = s["objectives"] if s["multi_objective"] else [objective, "params"]
        sections.append(_section("pareto", _fig_html(figures.fig_pareto(pareto_rows, objectives=names), "pareto",
                                                     figures.NOTES["pareto"])))
    sections.append(_section("trials", trials_html(data.trial_rows(view))))

    joined = "".join(sections)
    nav = "".join(f'<a href="#{k}">{e(SECTIONS[k])}</a>' for k in SECTIONS if f'<section id="{k}">' in joined)
    name = s.get("study_name") or "study"
    title = title or f"autokd report — {name}"
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta = f"study {e(name)} · {e(s['n_trials'])} trials · generated {e(now)}"
    if s.get("autokd_version"):
        meta += f" · autokd {e(s['autokd_version'])}"
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{CSS}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<header><h1>{e(title)}</h1><div class="meta">{meta}</div><nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>generated by autokd · self-contained, works offline</footer>
<script>{JS}</script>
</body>
</html>
"""


def build_report(study: Study | Sequence[Any], path: str | Path, *, title: str | None = None,
                 directions: Sequence[Any] | None = None, top_k: int = 20,
                 final: str | Path | Mapping[str, Any] | None = None, command: str | None = None) -> Path:
    """Write one self-contained HTML report (plotly.js inlined, no CDN) and return its path.

    ``path`` may be an existing directory (then ``report.html`` inside it); parents are created. ``study`` may
    also be a list of FrozenTrial with ``directions``. ``final`` is the like-for-like retrain
    (``final/results.json`` or its parsed content) shown at the top; ``command`` is how to make one when
    there is none.
    """
    out = Path(path)
    if out.is_dir():
        out = out / "report.html"
    text = render_report(study, title=title, directions=directions, top_k=top_k, final=final, command=command)
    atomic_write_text(out, text)
    return out
