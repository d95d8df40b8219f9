"""Study report: plain data from an Optuna study (:mod:`.data`) and a self-contained HTML page.

Importing this package does not import plotly; :func:`build_report` imports it on call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import (
    Importances,
    history,
    importances,
    intermediate,
    leaderboard,
    objective_names,
    parallel,
    pareto,
    proxy_vs_accuracy,
    rank_correlation,
    summary,
    trials_table,
)

__all__ = [
    "Importances",
    "build_report",
    "history",
    "importances",
    "intermediate",
    "leaderboard",
    "objective_names",
    "parallel",
    "pareto",
    "proxy_vs_accuracy",
    "rank_correlation",
    "summary",
    "trials_table",
]


def build_report(study: Any, path: str | Path, *, title: str | None = None, **kwargs: Any) -> Path:
    """Write the self-contained HTML report; see :func:`autokd.report.html.build_report`."""
    from .html import build_report as _build

    return _build(study, path, title=title, **kwargs)
