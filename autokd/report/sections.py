"""HTML fragments of the report page: the evidence headline, summary cards, leaderboard and trial table.
Every value is escaped; tables are sortable and filterable by the page's own script (``data-sort`` cells)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from .data.evidence import IN_STUDY_NOTE, stronger_note

__all__ = ["evidence_html", "summary_html", "leaderboard_html", "trials_html", "note", "e"]


def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
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


def _pts(v: float | None, sign: bool = True) -> str:
    """A gain in points, coloured."""
    if v is None:
        return "–"
    cls = "pos" if v > 0 else "neg" if v < 0 else ""
    return f'<span class="{cls}">{e(f"{v:+.2f}" if sign else f"{v:.2f}")}</span>'


def _tag(tag: str | None) -> str:
    names = {"ce_only": "CE-only", "kd": "KD"}
    return f'<span class="tag {e(tag)}">{e(names.get(tag, tag))}</span>' if tag else ""


def _kv(pairs: Sequence[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _card(title: str, big: str, pairs: Sequence[tuple[str, str]] = ()) -> str:
    return f'<div class="card"><h3>{e(title)}</h3><div class="big">{big}</div>{_kv(pairs) if pairs else ""}</div>'


def _cell(text: str, sort: Any = None, cls: str = "") -> str:
    """A table cell; ``sort`` is the value the page's script sorts by (numbers sort numerically)."""
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None:
        attrs += f' data-sort="{e(sort)}"'
    return f"<td{attrs}>{text}</td>"


def _table(tid: str, head: Sequence[tuple[str, str]], body: Sequence[str], placeholder: str) -> str:
    """A sortable, filterable table: ``head`` is (label, css class: "" or "opt" for collapsed columns)."""
    thead = "<tr>" + "".join(f'<th class="{c}">{e(h)}</th>' for h, c in head) + "</tr>"
    opt = any(c == "opt" for _, c in head)
    tools = (f'<div class="tools"><input type="search" class="filter" data-table="{tid}" '
             f'placeholder="{e(placeholder)}">'
             + (f'<label><input type="checkbox" class="toggle-opt" data-table="{tid}"> show parameter columns'
                '</label>' if opt else "") + "</div>")
    return (tools + f'<div class="scroll"><table class="data sortable hide-opt" id="{tid}">'
            f"<thead>{thead}</thead><tbody>{''.join(body)}</tbody></table></div>")


# ---------------------------------------------------------------------------------------------- evidence
def evidence_html(ev: Mapping[str, Any] | None, s: Mapping[str, Any], *, recipe_text: str | None,
                  recipe_yaml: str | None, command: str) -> str:
    """The top section: the recipe in words and YAML, then the like-for-like retrain (or how to make one),
    then the in-study numbers labelled for what they are."""
    parts = []
    desc = (ev or {}).get("description") or recipe_text
    if desc:
        parts.append(f'<p class="recipe" id="recipe-text">{e(desc)}</p>')
    if recipe_yaml:
        parts.append(f"<details><summary>recipe as YAML</summary><pre>{e(recipe_yaml)}</pre></details>")
    if ev is None or not ev.get("runs"):
        parts.append('<div class="warn" id="no-retrain"><b>No like-for-like retrain yet.</b> The numbers below '
                     "are from the search only. Retrain the recipe beside plain KD and CE-only (same student, "
                     f"optimiser and schedule, several seeds) with:<pre>{e(command)}</pre></div>")
    else:
        n = max(r["n"] for r in ev["runs"])
        head = ("<tr><th>run</th><th>test accuracy (%) mean ± std</th><th>n seeds</th>"
                "<th>top-1 agreement with teacher</th><th>KL(p_t ‖ p_s)</th></tr>")
        body = "".join(
            f'<tr data-run="{e(r["label"])}"><td>{e(r["name"])}</td>'
            f'<td class="num"><span class="acc-mean">{r["mean"]:.2f}</span> ± {r["std"]:.2f}</td>'
            f'<td class="num">{r["n"]}</td><td class="num">{_num(r["agreement"])}</td>'
            f'<td class="num">{_num(r["kl"])}</td></tr>' for r in ev["runs"])
        parts.append(f'<table class="data" id="evidence-table"><thead>{head}</thead><tbody>{body}</tbody></table>')
        rows = []
        for c in ev["comparisons"]:
            ci = (f"[{c['low']:+.2f}, {c['high']:+.2f}]" if c["low"] is not None else "no interval (one seed)")
            rows.append(f'<tr data-vs="{e(c["label"])}"><td>recipe − {e(c["name"])}</td>'
                        f'<td class="num diff-mean">{_pts(c["mean"])}</td><td class="num ci">{e(ci)}</td>'
                        f'<td class="verdict"><b>{e(c["verdict"])}</b></td></tr>')
        if rows:
            conf = int(round(100 * ev["comparisons"][0]["confidence"]))
            parts.append(f'<table class="data" id="comparison-table"><thead><tr><th>paired difference</th>'
                         f"<th>mean (points)</th><th>{conf} % interval</th><th>verdict</th></tr></thead>"
                         f"<tbody>{''.join(rows)}</tbody></table>")
        for x in ev.get("stronger") or []:
            parts.append(f'<div class="warn" data-stronger="{e(x["baseline"])}">{e(stronger_note(x))}</div>')
        sizes = ev.get("sizes") or {}
        facts = [f"test accuracy of finished students over {n} seeds, seed i of the recipe paired with seed i of "
                 "each baseline (Student t, n − 1 degrees of freedom)"]
        if sizes:
            facts.append(f"validation set {sizes.get('val', '?')} images, test set {sizes.get('test', '?')} images"
                         + (f" (one test image = {ev['test_point']:.2f} points)" if ev.get("test_point") else ""))
        facts.append("fidelity (Stanton et al., 2021) on the test split at T = 1")
        parts.append("<ul class=\"facts\">" + "".join(f"<li>{e(f)}</li>" for f in facts) + "</ul>")
        if ev.get("path"):
            parts.append(note(f"from {ev['path']}"))
    best = s.get("best_searched")
    if best is not None:
        parts.append(
            '<p class="in-study">In the search: best trial '
            f"{e(best['number'])} reached {e(_num(best['value']))} validation accuracy; gain "
            f"{_pts(None if best['gain_vs_kd'] is None else 100 * best['gain_vs_kd'])} points vs KD, "
            f"{_pts(None if best['gain_vs_ce'] is None else 100 * best['gain_vs_ce'])} points vs CE-only "
            f"<i>{e(IN_STUDY_NOTE)}</i>.</p>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- summary
def summary_html(s: Mapping[str, Any]) -> str:
    cards = []
    teacher = s.get("teacher")
    if isinstance(teacher, Mapping) and teacher:
        pairs = [(k, e(_human(v) if k in ("params", "flops") else _num(v) if isinstance(v, float) else v))
                 for k, v in teacher.items() if k != "name"]
        cards.append(_card("Teacher", e(teacher.get("name", "–")), pairs))
    else:
        cards.append(_card("Teacher", e(teacher) if teacher else "–", [] if teacher else [("info", "not recorded")]))
    for tag, label in (("ce_only", "CE-only baseline (in-study)"), ("kd", "KD baseline (in-study)")):
        b = s["baselines"].get(tag)
        if b is None:
            cards.append(_card(label, "–", [("status", "not run")]))
        else:
            pairs = [("trial", e(b["number"])), ("state", e(b["state"].lower()))]
            if b.get("student"):
                pairs.append(("student", e(b["student"])))
            cards.append(_card(label, e(_num(b["value"])), pairs))
    counts = s["counts"]
    pairs = [(k.lower(), e(v)) for k, v in counts.items() if v or k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")]
    dups = s.get("duplicates") or []
    pairs.append(("duplicate recipes", e("none") if not dups else
                  "<b>" + e("; ".join("trials " + ", ".join(map(str, g)) for g in dups)) + "</b>"))
    cards.append(_card("Trials", e(s["n_trials"]), pairs))
    pairs = [("train time", e(_secs(s.get("total_train_time_s"))))]
    if s.get("pareto_size") is not None:
        pairs.append(("Pareto-optimal trials", e(s["pareto_size"])))
    cards.append(_card("Total epochs trained", e(f"{s['total_epochs']:,}"), pairs))
    study_pairs = [("dataset", e(s.get("dataset") or "–")), ("search space", e(s.get("space") or "–")),
                   ("objectives", e(", ".join(f"{n} ({d})" for n, d in zip(s["objectives"], s["directions"],
                                                                          strict=True)))),
                   ("autokd", e(s.get("autokd_version") or "–"))]
    runs = s.get("runs") or []
    if runs:  # who searched, with which sampler seed: enough to rerun the study draw for draw
        study_pairs.append(("runs (sampler seeds)", e(f"{len(runs)}: " + ", ".join(
            f"{r['name']} ({r['sampler_seed']})" for r in runs))))
    cards.append(_card("Study", e(s.get("study_name") or "–"), study_pairs))
    return '<div class="cards">' + "".join(cards) + "</div>"


# ---------------------------------------------------------------------------------------------- tables
def leaderboard_html(rows: Sequence[Mapping[str, Any]], s: Mapping[str, Any]) -> str:
    if not rows:
        return note("no completed trials yet")
    objectives = s["objectives"]
    pnames = sorted({k for r in rows for k in r["params"]} - {"student"})
    head = [("#", ""), ("trial", ""), ("", ""), ("recipe", ""), (f"{objectives[0]} (mean ± std over seeds)", "")]
    head += [(o, "") for o in objectives[1:]]
    head += [("gain vs CE (pts)", ""), ("gain vs KD (pts)", ""), ("student", ""), ("params", ""), ("FLOPs", ""),
             ("latency (ms)", ""), ("epochs", ""), ("train time", "")]
    head += [(p, "opt") for p in pnames]
    best_searched = (s.get("best_searched") or {}).get("number")
    body = []
    for r in rows:
        cls = "baseline" if r["is_baseline"] else "best" if r["number"] == best_searched else ""
        val = e(_num(r["value"]))
        if r.get("val_std") is not None and r.get("val_seeds"):
            val += f' <span class="muted">± {r["val_std"]:.4f} (n={len(r["val_seeds"])})</span>'
        gce = None if r["gain_vs_ce"] is None else 100 * r["gain_vs_ce"]
        gkd = None if r["gain_vs_kd"] is None else 100 * r["gain_vs_kd"]
        cells = [_cell(e(r["rank"]), r["rank"], "num"), _cell(e(r["number"]), r["number"], "num"),
                 _cell(_tag(r["baseline"]), r["baseline"] or ""),
                 _cell(e(r.get("description") or "–"), None, "recipe"), _cell(val, r["value"], "num")]
        cells += [_cell(e(_num(v)), v, "num") for v in r["values"][1:]]
        cells += [_cell(_pts(gce), gce if gce is not None else "", "num"),
                  _cell(_pts(gkd), gkd if gkd is not None else "", "num"),
                  _cell(e(r["student"] if r["student"] is not None else "–")),
                  _cell(e(_human(r["n_params"])), r["n_params"], "num"),
                  _cell(e(_human(r["flops"])), r["flops"], "num"),
                  _cell(e(_num(r["latency_ms"], 2)), r["latency_ms"], "num"),
                  _cell(e(_num(r["epochs"], 0)), r["epochs"], "num"),
                  _cell(e(_secs(r["train_time_s"])), r["train_time_s"], "num")]
        cells += [_cell(e(_param(r["params"].get(p))), None, "opt") for p in pnames]
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    return _table("leaderboard-table", head, body, "filter: loss, student, scheme…")


def _param(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def trials_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every trial (from :func:`autokd.report.data.trial_rows`), collapsed by default."""
    if not rows:
        return note("no trials")
    keys = [k for k in rows[0] if any(r.get(k) is not None for r in rows)]
    main = {"number", "state", "value", "baseline", "description", "gain_vs_kd_pts", "gain_vs_ce_pts", "reason",
            "duration_s"}
    head = [(k.replace("_pts", " (pts)").replace("_", " "), "" if k in main else "opt") for k in keys]
    body = []
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cls = "opt" if k not in main else ""
            if k == "duration_s":
                cells.append(_cell(e(_secs(v)), v if v is not None else "", cls))
            elif k.endswith("_pts"):
                cells.append(_cell(_pts(v), v if v is not None else "", cls))
            elif k == "baseline":
                cells.append(_cell(_tag(v), v or "", cls))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(_cell(e(_num(v) if k != "number" else v), v, f"num {cls}".strip()))
            else:
                cells.append(_cell(e(_param(v)), None, cls))
        body.append(f'<tr class="{e(str(r.get("state", "")).lower())}">' + "".join(cells) + "</tr>")
    return (f"<details><summary>show {len(rows)} trials</summary>"
            + _table("trials-table", head, body, "filter: state, loss, reason…") + "</details>")
