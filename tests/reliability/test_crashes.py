"""Fault injection: ``kill -9`` at each phase of a study, then a rerun of the same command ends with the right
number of trials, nothing left RUNNING and no corrupted file; corrupted stored files are refused or
recomputed, never trusted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import torch
from worker_processes import ROOT, start_worker

from autokd import data, models
from autokd.config import StudyConfig
from autokd.search import trial_record as tr
from autokd.search.backends.storage import load_study
from autokd.train import CachedTeacher

SPACE = ROOT / "search_spaces" / "digits.yaml"


def _study(tmp: Path, *, teacher_epochs: int = 1, epochs: int = 1, trials: int = 2) -> Path:
    path = tmp / "crash.yaml"
    path.write_text(f"""
name: crash
device: cpu
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: {teacher_epochs}}}
space: {SPACE}
search: {{sampler: random, pruner: none, trials: {trials}, epochs: {epochs}}}
""")
    return path


def _wait_for(predicate, timeout: float = 300, what: str = "") -> None:
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _complete(path: Path, trials: int) -> None:
    study = load_study(StudyConfig.load(path))
    ts = study.get_trials(deepcopy=False)
    assert not [t for t in ts if t.state == optuna.trial.TrialState.RUNNING]
    done = [t for t in ts if not tr.is_baseline(t)
            and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == trials
    assert len([t for t in ts if tr.is_baseline(t) and t.state == optuna.trial.TrialState.COMPLETE]) == 4


def _rerun(path: Path, tmp: Path, **kw) -> None:
    short = _study(tmp, **kw)
    p = start_worker(short, log=tmp / "rerun.log")
    assert p.wait(timeout=600) == 0, (tmp / "rerun.log").read_text()[-2000:]


def test_kill_9_while_the_teacher_trains(tmp_path):
    path = _study(tmp_path, teacher_epochs=30)
    log = tmp_path / "first.log"
    p = start_worker(path, log=log)
    _wait_for(lambda: "teacher: training" in log.read_text(), what="teacher training")
    time.sleep(1.0)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "crash" / "teacher.pt").exists()  # never a half-written teacher
    _rerun(tmp_path, tmp_path, teacher_epochs=30)  # the same command: the teacher is trained again, whole
    _complete(path, trials=2)


def test_kill_9_during_a_searched_trial(tmp_path):
    path = _study(tmp_path, epochs=60, trials=2)
    cfg = StudyConfig.load(path)
    p = start_worker(path, log=tmp_path / "first.log")

    def searched_running() -> bool:
        try:
            study = load_study(cfg)
        except Exception:
            return False
        return any(not tr.is_baseline(t) and tr.recipe_dict_of(t) is not None  # training
                   for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))

    _wait_for(searched_running, timeout=600, what="a searched trial")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    _rerun(tmp_path, tmp_path, epochs=1, trials=2)
    _complete(path, trials=2)
    failed = [t for t in load_study(cfg).trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("died" in (tr.fail_reason_of(t) or "") for t in failed)


@pytest.fixture(scope="module")
def bundle():
    return data.create("digits", train_fraction=0.2)


def test_a_cache_of_the_wrong_length_or_another_teacher_is_recomputed(bundle, tmp_path):
    torch.manual_seed(0)
    t1 = models.create("cnn", 10, in_channels=1, width=4).eval()
    src = CachedTeacher(t1, bundle, torch.device("cpu"), cache_dir=tmp_path)
    idx = torch.arange(8)
    want = t1(bundle.train_eval[0][0][None]).detach()
    first = src.batch(None, idx).logits
    assert torch.allclose(first[0], want[0], atol=1e-5)
    path = src._path(False)
    assert path.is_file()
    # a valid-looking file of the wrong length under the same name: refused and recomputed
    blob = torch.load(path, weights_only=True)
    blob["logits"] = blob["logits"][:5]
    torch.save(blob, path)
    again = CachedTeacher(t1, bundle, torch.device("cpu"), cache_dir=tmp_path).batch(None, idx).logits
    assert torch.allclose(again, first)
    # another teacher (swapped checkpoint) never reads the first teacher's outputs
    t2 = models.create("cnn", 10, in_channels=1, width=4).eval()
    other = CachedTeacher(t2, bundle, torch.device("cpu"), cache_dir=tmp_path)
    assert other._path(False) != path
    assert torch.allclose(other.batch(None, idx).logits[0], t2(bundle.train_eval[0][0][None])[0], atol=1e-5)
    # garbage bytes: recomputed
    path.write_bytes(b"not a torch file")
    assert torch.allclose(CachedTeacher(t1, bundle, torch.device("cpu"), cache_dir=tmp_path)
                          .batch(None, idx).logits, first)


def test_a_changed_train_fraction_gets_its_own_cache(tmp_path):
    torch.manual_seed(0)
    t = models.create("cnn", 10, in_channels=1, width=4).eval()
    a = CachedTeacher(t, data.create("digits", train_fraction=0.2), torch.device("cpu"), cache_dir=tmp_path)
    b = CachedTeacher(t, data.create("digits", train_fraction=0.3), torch.device("cpu"), cache_dir=tmp_path)
    assert a._path(False) != b._path(False)


def test_a_changed_study_is_not_resumed_silently(tmp_path):
    from typer.testing import CliRunner

    from autokd.cli import app

    path = _study(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["search", str(path)]).exit_code == 0
    path.write_text(path.read_text().replace("width: 4}, epochs: 1}", "width: 4}, epochs: 2}"))  # the teacher
    res = runner.invoke(app, ["search", str(path)], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "different teacher" in res.output and "--allow-changed" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["search", str(path), "--allow-changed", "--trials", "3"])
    assert res.exit_code == 0, res.output
    study = load_study(StudyConfig.load(path))
    history = study.user_attrs["fingerprint_history"]
    assert history and history[0]["changed"] == ["teacher"]
    assert len({t.user_attrs.get("fingerprint") for t in study.trials}) == 2


def test_kill_9_during_the_retrain_leaves_the_previous_final_folder_whole(tmp_path):
    import subprocess
    import sys

    from typer.testing import CliRunner
    from worker_processes import worker_env

    from autokd.cli import app

    path = _study(tmp_path, trials=1)
    runner = CliRunner()
    assert runner.invoke(app, ["search", str(path)]).exit_code == 0
    recipe = tmp_path / "crash" / "best_recipe.yaml"
    res = runner.invoke(app, ["train", str(recipe), "--study", str(path), "--seeds", "2", "--epochs", "1"])
    assert res.exit_code == 0, res.output
    final = tmp_path / "crash" / "final"
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    assert "results.json" in before
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "autokd", "train", str(recipe), "--study", str(path),
                              "--seeds", "3", "--epochs", "200"], stdout=out, stderr=subprocess.STDOUT,
                             env=worker_env(), cwd=ROOT)
        _wait_for(lambda: "final [2/" in log.read_text(), what="the second retrain run")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    after = {p.name: p.read_bytes() for p in final.iterdir()}
    assert after == before  # the old results and checkpoints, nothing of the killed run
    res = runner.invoke(app, ["train", str(recipe), "--study", str(path), "--seeds", "2", "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert not [q for q in (tmp_path / "crash").iterdir() if q.name.startswith(".final")]


def test_an_edited_space_is_not_resumed_silently_and_export_uses_the_recipes_own_baselines(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from autokd.cli import app

    space = tmp_path / "space.yaml"
    space.write_text(SPACE.read_text())
    path = _study(tmp_path)
    path.write_text(path.read_text().replace(f"space: {SPACE}", f"space: {space}"))
    runner = CliRunner()
    assert runner.invoke(app, ["search", str(path)]).exit_code == 0
    # the exported baselines are those trained with the recipe's own student
    recipe = yaml.safe_load((tmp_path / "crash" / "best_recipe.yaml").read_text())
    study = load_study(StudyConfig.load(path))
    student = tr.student_of(study.trials[recipe["provenance"]["trial"]])
    own = {tr.baseline_of(t).value: t.value for t in study.trials if tr.is_baseline(t) and tr.student_of(t) == student}
    assert set(own) == {"ce_only", "kd"}
    for kind, value in own.items():
        assert recipe["provenance"]["metrics"][f"{kind}_val_acc"] == value
    space.write_text(space.read_text().replace("description: ", "description: edited; ", 1))
    res = runner.invoke(app, ["search", str(path)], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "different space" in res.output, res.output


def test_kill_9_during_the_report_never_leaves_a_partial_page(tmp_path):
    """``kill -9`` at several points of ``autokd report``: report.html is always either the previous page or a
    whole new one, and the next report removes the dead writers' temporaries."""
    import subprocess
    import sys

    from typer.testing import CliRunner
    from worker_processes import worker_env

    from autokd.cli import app

    path = _study(tmp_path, trials=1)
    runner = CliRunner()
    assert runner.invoke(app, ["search", str(path)]).exit_code == 0
    assert runner.invoke(app, ["report", str(path)]).exit_code == 0
    page = tmp_path / "crash" / "report.html"
    first = page.read_bytes()
    assert first.rstrip().endswith(b"</html>")
    killed_mid_run = 0
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        p = subprocess.Popen([sys.executable, "-m", "autokd", "report", str(path)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT, env=worker_env(), cwd=ROOT)
        time.sleep(delay)
        killed_mid_run += p.poll() is None
        p.kill()
        p.wait()
        now = page.read_bytes()
        assert now == first or now.rstrip().endswith(b"</html>"), f"partial page after kill at {delay}s"
    assert killed_mid_run >= 3  # most kills landed while the report was being made
    assert runner.invoke(app, ["report", str(path)]).exit_code == 0
    assert page.read_bytes().rstrip().endswith(b"</html>")
    assert not [q.name for q in page.parent.iterdir() if q.name.startswith(".report.html.")]
