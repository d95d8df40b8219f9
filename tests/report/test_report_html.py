"""The self-contained HTML page (autokd.report.build_report)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial
from report_studies import make_study, trial

import autokd.report as report

ROOT = Path(__file__).resolve().parents[2]
HEADINGS = [
    "Best recipe &amp; evidence",
    "Search summary",
    "Distillation: gain over KD",
    "Optuna views",
    "Leaderboard",
    "Optimisation history",
    "Intermediate values",
    "Parallel coordinates",
    "Parameter importances",
    "Proxy score vs accuracy",
]


def test_import_does_not_import_plotly():
    code = "import autokd.report, sys; assert 'plotly' not in sys.modules, 'plotly imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.fixture(scope="module")
def plotlyjs():
    plotly_offline = pytest.importorskip("plotly.offline")
    return plotly_offline.get_plotlyjs()


def _leaderboard_numbers(text):
    table = text.split('id="leaderboard-table"', 1)[1].split("</table>", 1)[0]
    return [
        int(n)
        for n in re.findall(r'<tr class="[^"]*"><td class="num" data-sort="\d+">\d+</td>'
                            r'<td class="num" data-sort="\d+">(\d+)</td>', table)
    ]


def test_report_single_objective(study, tmp_path, plotlyjs):
    out = report.build_report(study, tmp_path / "sub" / "report.html", title="My <KD> study")
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    # plotly.js inline exactly once, nothing loaded from outside
    assert text.count(plotlyjs) == 1
    assert text.count("cdn.plot.ly") == plotlyjs.count(
        "cdn.plot.ly"
    )  # only the bundle's unused topojson default
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)\s*=", text, re.I)
    assert text.count("Plotly.newPlot") >= 5
    for h in HEADINGS:
        assert f"<h2>{h}</h2>" in text
    assert "<h2>Pareto front</h2>" in text  # accuracy vs the recorded parameter count, for every study
    assert "<title>My &lt;KD&gt; study</title>" in text
    assert _leaderboard_numbers(text) == [6, 2, 1, 5, 0]
    assert "+8.00" in text and "+6.00" in text and "-2.00" in text  # gains (points) of trial 6 / CE row vs KD
    assert "resnet56" in text and "cifar10" in text  # teacher, dataset
    assert "Total epochs trained" in text and ">53<" in text


def test_report_multi_objective(mo_study, tmp_path, plotlyjs):
    out = report.build_report(mo_study, tmp_path)  # a directory: writes report.html inside
    assert out == tmp_path / "report.html"
    text = out.read_text(encoding="utf-8")
    assert "<h2>Pareto front</h2>" in text and 'id="fig-pareto"' in text
    assert _leaderboard_numbers(text) == [3, 1, 2, 0, 4]
    assert "<h2>Proxy score vs accuracy</h2>" not in text


def test_report_notes_for_empty_figures(tmp_path, plotlyjs):
    study = make_study([trial(value=0.5, kd_weight=0.2)])
    text = report.build_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "parameter importances need ≥2 completed searched trials with varying parameters" in text
    assert "no trial reported intermediate values" in text
    empty = report.build_report(make_study([]), tmp_path / "e.html").read_text(encoding="utf-8")
    assert "no completed trials yet" in empty


def test_report_escapes_values(tmp_path, plotlyjs):
    evil = "<script>alert(1)</script>"
    dist = {"student": CategoricalDistribution(["resnet8", evil])}
    trials = [
        create_trial(
            value=0.6,
            params={"student": evil},
            distributions=dist,
            user_attrs={"prune_reason": evil, "note": evil, "student": evil},
        ),
        create_trial(value=0.5, params={"student": "resnet8"}, distributions=dist),
    ]
    study = make_study(trials, teacher={"name": evil, "val_acc": 0.9})
    text = report.build_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert evil not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert '<th class="">student</th>' in text
