"""The CLI's live progress: each finished trial's line, with its gain over the study's KD baseline for the same
student, read from the study only until that baseline is known."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Console

from autokd.cli import progress as progress_module
from autokd.cli.progress import RichProgress

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trial(value, **attrs):
    return create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"val_acc": value, **attrs})


class CountingStudy:
    """A study whose reads of all its trials are counted."""

    def __init__(self, study) -> None:
        self.study, self.reads = study, 0

    def get_trials(self, *a, **k):
        self.reads += 1
        return self.study.get_trials(*a, **k)


@pytest.fixture
def progress(monkeypatch):
    monkeypatch.setattr(progress_module, "console", Console(file=io.StringIO(), width=200))
    return RichProgress()


def _lines(prog) -> list[str]:
    return prog.progress.console.file.getvalue().splitlines()


def test_gain_over_the_kd_baseline_of_the_same_student(progress):
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(0.70, baseline="ce", student="cnn(width=2)"))
    study.add_trial(_trial(0.72, baseline="kd", student="cnn(width=2)"))
    study.add_trial(_trial(0.60, baseline="kd", student="cnn(width=3)"))
    counted = CountingStudy(study)
    a = create_trial(state=TrialState.COMPLETE, value=0.7525, user_attrs={"student": "cnn(width=2)"})
    b = create_trial(state=TrialState.COMPLETE, value=0.6125, user_attrs={"student": "cnn(width=3)"})
    progress.trial_finished(counted, a)
    progress.trial_finished(counted, b)
    progress.trial_finished(counted, a)
    lines = _lines(progress)
    assert "(+3.25 pts vs KD)" in lines[0] and "(+1.25 pts vs KD)" in lines[1] and "(+3.25 pts vs KD)" in lines[2]
    # one read per student, then the completed baseline's value is kept (a completed trial never changes)
    assert counted.reads == 2 and progress.best == pytest.approx(0.7525)


def test_no_kd_baseline_yet_reads_again_after_recheck_s_until_one_completes(progress):
    study = optuna.create_study(direction="maximize")
    counted = CountingStudy(study)
    a = create_trial(state=TrialState.COMPLETE, value=0.75, user_attrs={"student": "cnn(width=2)"})
    progress.trial_finished(counted, a)
    assert "vs KD" not in _lines(progress)[0] and counted.reads == 1
    # another worker's KD baseline completes: within recheck_s of the last read the study is not read again
    study.add_trial(_trial(0.80, baseline="kd", student="cnn(width=2)"))
    progress.trial_finished(counted, a)
    assert "vs KD" not in _lines(progress)[1] and counted.reads == 1
    progress.recheck_s = 0.0  # past recheck_s: the next line finds it
    progress.trial_finished(counted, a)
    assert "(-5.00 pts vs KD)" in _lines(progress)[2] and counted.reads == 2


def test_a_kd_baseline_finished_here_is_used_without_a_read(progress):
    study = optuna.create_study(direction="maximize")
    counted = CountingStudy(study)
    kd = _trial(0.70, baseline="kd", student="cnn(width=2)")
    progress.trial_finished(counted, kd)
    assert "baseline kd" in _lines(progress)[0] and "vs KD" not in _lines(progress)[0]
    a = create_trial(state=TrialState.COMPLETE, value=0.71, user_attrs={"student": "cnn(width=2)"})
    progress.trial_finished(counted, a)
    assert "(+1.00 pts vs KD)" in _lines(progress)[1] and counted.reads == 0
