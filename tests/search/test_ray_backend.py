"""``search.backend: ray`` records a study exactly as the Optuna backend does, and resumes after a killed driver.

A local Ray (2 CPUs) trains digits trials of 2 epochs. The same study run by the Optuna backend is the
reference: the same sampler seed draws the same recipes in the same order, so parameters, attribute keys,
intermediate steps and the baselines' accuracies must match trial by trial.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest

from autokd import Recipe, api
from autokd.config import StudyConfig
from autokd.errors import ConfigError
from autokd.search import trial_record as tr
from autokd.search.backends.ray_processes import descendants, reap_orphans
from autokd.search.backends.storage import load_study
from autokd.search.run import run_search
from tests.worker_processes import start_worker

pytest.importorskip("ray.tune", reason="pip install 'autokd[ray]'")

ROOT = Path(__file__).resolve().parents[2]
TrialState = optuna.trial.TrialState


def _cfg(folder: Path, name: str, backend: str, trials: int = 4, ray: str = "num_cpus: 2, cpus_per_trial: 1",
         file: str | None = None, extra: str = "") -> StudyConfig:
    # SHA with reduction factor 100 keeps only the best trial of its rung: searched trials that are not the
    # best so far (the KD baseline is hard to beat on 2 epochs) are pruned at epoch 1
    path = folder / f"{file or name}.yaml"
    path.write_text(f"""
name: {name}
device: cpu
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 2}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search:
  backend: {backend}
  sampler: random
  pruner: sha
  pruner_kwargs: {{min_resource: 1, reduction_factor: 100}}
  trials: {trials}
  epochs: 2
  baseline_students: 1
  ray: {{{ray}}}
  {extra}
""")
    return StudyConfig.load(path)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray")
    quiet = {"log": lambda *a: None, "worker": 0}  # worker 0: both runs seed their sampler alike
    reference = run_search(_cfg(folder, "by_optuna", "optuna"), **quiet)
    on_ray = run_search(_cfg(folder, "by_ray", "ray"), **quiet)
    return reference, on_ray, folder


def _without_provenance(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "provenance"}


def _kind(t) -> str:
    return f"{'baseline' if tr.is_baseline(t) else 'searched'}-{t.state.name}"


def test_ray_records_trials_as_the_optuna_backend_does(studies):
    reference, on_ray, _ = studies
    assert len(on_ray.trials) == len(reference.trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in on_ray.trials)
    for ref, t in zip(reference.trials, on_ray.trials, strict=True):
        assert t.params == ref.params  # same sampler seed, same asks: the same recipe
        assert _without_provenance(tr.recipe_dict_of(t)) == _without_provenance(tr.recipe_dict_of(ref))
    keys = {}
    for study in (reference, on_ray):
        found: dict[str, set] = {}
        for t in study.trials:
            found.setdefault(_kind(t), set()).update(t.user_attrs)
            assert set(t.intermediate_values) == set(range(t.user_attrs["epochs"]))  # 0-based, one per epoch
        keys[id(study)] = found
    assert keys[id(on_ray)] == keys[id(reference)]
    # baselines train the same recipe with the same seed and the same teacher (weights and cached logits
    # shipped to the worker): the same accuracy
    for ref, t in zip(reference.trials, on_ray.trials, strict=True):
        if tr.is_baseline(t):
            assert t.state == TrialState.COMPLETE
            assert t.value == pytest.approx(ref.value, abs=1e-9)
            assert t.intermediate_values == pytest.approx(ref.intermediate_values, abs=1e-9)


def test_a_pruned_ray_trial_is_pruned_with_its_reason_and_files(studies):
    _, on_ray, folder = studies
    pruned = [t for t in on_ray.trials if t.state == TrialState.PRUNED]
    assert pruned and not any(tr.is_baseline(t) for t in pruned)
    for t in pruned:
        epochs = t.user_attrs["epochs"]
        assert tr.prune_reason_of(t) == (f"pruned at epoch {epochs - 1}: val acc {t.user_attrs['val_acc']:.4f} "
                                         "(by sha)")
        assert t.intermediate_values[epochs - 1] == t.user_attrs["val_acc"]
    cfg = _cfg(folder, "by_ray", "ray")
    for t in on_ray.trials:
        assert (cfg.study_dir / "trials" / str(t.number) / "metrics.json").is_file()
    assert tr.worker_of(on_ray.trials[0])[1] == os.getpid()  # the driver owns every trial


def test_report_and_export_work_on_a_ray_study(studies):
    _, on_ray, folder = studies
    study_file = folder / "by_ray.yaml"
    html = api.make_report(study_file)
    assert html.is_file() and html.stat().st_size > 10_000
    recipe = api.export_recipe(study_file, folder / "best.yaml")
    best = max((t for t in on_ray.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert tr.recipe_dict_of(best)["student"] == Recipe.load(recipe).to_dict()["student"]


def test_joining_a_cluster_that_is_not_running_is_one_line(studies, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _, on_ray, folder = studies
    cfg = _cfg(folder, "by_ray", "ray", ray="address: auto", file="by_ray_on_a_cluster")
    with pytest.raises(ConfigError, match=r"^search.ray.address: cannot join the Ray cluster at 'auto' \("):
        run_search(cfg, trials=8, log=lambda *a: None)
    assert len(load_study(cfg).trials) == len(on_ray.trials)  # nothing ran


def test_a_killed_driver_is_resumed_by_rerunning(tmp_path):
    study_file = tmp_path / "resume.yaml"
    # a kill between asking for a trial and claiming it leaves no owner: failed after the (short) grace period
    cfg = _cfg(tmp_path, "resume", "ray", trials=5, extra="heartbeat_interval: 1\n  heartbeat_grace: 10")
    proc = start_worker(study_file, log=tmp_path / "driver.log")
    ray_pids: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill it once it has finished two trials and runs others
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
            ray_pids.update(descendants(proc.pid))
            try:
                trials = load_study(cfg).get_trials(deepcopy=False)
            except ConfigError:  # not created yet
                continue
            if (sum(t.state == TrialState.COMPLETE for t in trials) >= 2
                    and any(t.state == TrialState.RUNNING for t in trials)):
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = load_study(cfg).get_trials(deepcopy=False)
        assert any(t.state == TrialState.RUNNING for t in left)
        study = run_search(cfg, log=lambda *a: None)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap_orphans(cfg.study_dir / "ray")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    searched = [t for t in study.trials if not tr.is_baseline(t) and t.state != TrialState.FAIL]
    assert len(searched) == 5
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all("died while running this trial" in tr.fail_reason_of(t)
                          or "no worker claimed it" in tr.fail_reason_of(t) for t in failed)
    # the killed driver's Ray (GCS, raylet, agents) was stopped by the rerun, which shut its own down
    assert [p for p in ray_pids if _alive(p)] == []
    assert [p for p in descendants(os.getpid()) if _alive(p)] == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_failed_as_stale_meanwhile_is_left_to_its_retry(tmp_path):
    """A lost Ray trial that another worker already failed as stale (and retried) is not failed, recorded or
    retried a second time."""
    import contextlib
    from types import SimpleNamespace

    from autokd.search.backends.ray_backend import StudySearcher, _Live
    from autokd.search.backends.storage import make_storage
    from autokd.search.backends.workers import RetryTrial
    from autokd.search.batched_writes import IntermediateValues

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=make_storage(url), study_name="s")
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    live = _Live(trial, None, contextlib.ExitStack(), True, IntermediateValues(trial))
    live.values.report(0.5, 0)
    other = optuna.load_study(study_name="s", storage=make_storage(url))  # the worker that saw it stale
    other.tell(trial.number, state=TrialState.FAIL)
    RetryTrial()(other, other.trials[trial.number])
    frozen = StudySearcher._lost(SimpleNamespace(study=study), live, "the Ray worker running it stopped")
    assert frozen.state == TrialState.FAIL and tr.fail_reason_of(frozen) is None
    states = [t.state for t in optuna.load_study(study_name="s", storage=make_storage(url)).trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # one retry, the other worker's
