"""Fixtures for the report tests."""

from __future__ import annotations

import pytest
from report_studies import STUDY_ATTRS, make_study, single_objective_trials, trial


@pytest.fixture
def study():
    return make_study(single_objective_trials(), **STUDY_ATTRS)


@pytest.fixture
def mo_study():
    """(val_acc max, params min): trial 2 is dominated by trial 1."""
    rows = [
        (0.70, 100_000, "resnet8", "ce"),
        (0.75, 500_000, "resnet14", None),
        (0.72, 2_000_000, "resnet14", None),
        (0.80, 3_000_000, "resnet14", None),
        (0.65, 50_000, "mobilenet_tiny", "kd"),
    ]
    trials = []
    for acc, n, student, base in rows:
        attrs = {"baseline": base} if base else {}
        trials.append(
            trial(values=[acc, n], student=student, kd_weight=acc - 0.5, n_params=n, epochs=5, **attrs)
        )
    return make_study(trials, directions=("maximize", "minimize"), **STUDY_ATTRS)
