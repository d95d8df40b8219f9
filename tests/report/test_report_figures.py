"""Figures from data rows (autokd.report.figures)."""

from __future__ import annotations

import pytest

pytest.importorskip("plotly")

import plotly.graph_objects as go  # noqa: E402

from autokd.report import data, figures  # noqa: E402


def test_empty_inputs_give_none():
    assert figures.fig_history([]) is None
    assert figures.fig_parallel({"params": [], "rows": []}) is None
    assert figures.fig_importances(data.Importances(reason="x")) is None
    assert figures.fig_intermediate([]) is None
    assert figures.fig_proxy([]) is None
    assert figures.fig_pareto([]) is None


def test_figures_from_study(study):
    fh = figures.fig_history(data.history(study))
    assert isinstance(fh, go.Figure)
    best = [t for t in fh.data if t.name == "best so far"][0]
    assert list(best.y) == [0.70, 0.72, 0.75, 0.75, 0.78]
    assert {t.name for t in fh.data} >= {"trial", "CE baseline", "KD baseline"}

    fi = figures.fig_intermediate(data.intermediate(study))
    pruned = [t for t in fi.data if t.legendgroup == "pruned"]
    assert len(pruned) == 1 and pruned[0].line.dash == "dash" and pruned[0].line.color == "#9e9e9e"
    assert len(fi.data) == 7  # one line per trial with intermediate values

    fp = figures.fig_proxy(data.proxy_vs_accuracy(study))
    assert "Spearman" in fp.layout.title.text

    imp = figures.fig_importances({"lr": 0.2, "kd_weight": 0.8})
    assert list(imp.data[0].y) == ["lr", "kd_weight"]  # most important on top


def test_parallel_categorical_ticks_and_missing(study):
    fig = figures.fig_parallel(data.parallel(study))
    dims = {d.label: d for d in fig.data[0].dimensions}
    student = dims["student"]
    assert list(student.ticktext) == ["resnet8", "resnet14", "mobilenet_tiny"]
    assert list(student.tickvals) == [0, 1, 2]
    assert list(student.values) == [0, 0, 1, 2, 1]  # trials 0, 1, 2, 5, 6
    ce = dims["ce_weight"]
    assert ce.ticktext[0] == "n/a" and list(ce.values)[2] == 0.5 and list(ce.values)[0] == ce.tickvals[0]
    assert "lr (log)" in dims and "val_acc" in dims


def test_pareto_figure(mo_study):
    fig = figures.fig_pareto(data.pareto(mo_study))
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    assert list(front.x) == [50_000, 100_000, 500_000, 3_000_000]
    assert fig.layout.xaxis.type == "log"
