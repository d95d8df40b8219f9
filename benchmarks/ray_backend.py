"""Ray Tune backend vs the Optuna backend: digits trials per hour on the same cores.

    python benchmarks/ray_backend.py [--trials 12] [--epochs 2] [--cpus 2]

The same digits study (the demo's space, ``--trials`` searched trials of ``--epochs`` epochs plus its two
baselines, random sampler, no pruning), from the same stored teacher, run three ways on ``--cpus`` cores:

- ``optuna x1``: one ``autokd search`` process with ``--cpus`` torch threads;
- ``optuna xN``: ``--cpus`` worker processes sharing the study, one thread each (the one-machine setup);
- ``ray``: ``search.backend: ray``, a local Ray with ``--cpus`` CPUs, one CPU (= one thread) per trial.

For each: wall time of the whole command (process start, imports, ``ray.init``, all trials), the trial
throughput between the first trial's start and the last trial's end, and the steady throughput after each
slot's first trial (whose time includes starting a worker process: what a long study converges to).
Prints trials/hour and the ratios ray / optuna measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study_yaml(folder: Path, name: str, trials: int, epochs: int, backend: str, cpus: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"""
name: {name}
device: cpu
data: {{name: digits, train_fraction: 0.25}}
teacher: {{name: cnn, kwargs: {{width: 16}}, epochs: 5}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search:
  backend: {backend}
  sampler: random
  pruner: none
  trials: {trials}
  epochs: {epochs}
  baseline_students: 1
  ray: {{num_cpus: {cpus}, cpus_per_trial: 1}}
""")
    return path


def run(study: Path, workers: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "autokd", "search", str(study), "--worker", f"w{k}",
                               "--threads", str(threads)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"autokd search failed:\n{err[-3000:]}")
    return time.perf_counter() - t0


def trial_span(study: Path, slots: int) -> tuple[int, float, float]:
    """(finished trials, seconds from the first trial's start to the last trial's end, steady trials/hour:
    the trials finished after the first ``slots`` ones — whose time includes starting a worker process —
    over the time from the ``slots``-th completion to the last)."""
    sys.path.insert(0, str(ROOT))
    import optuna

    from autokd.config import StudyConfig
    from autokd.search.backends.storage import load_study

    trials = [t for t in load_study(StudyConfig.load(study)).trials
              if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    start = min(t.datetime_start for t in trials)
    ends = sorted(t.datetime_complete for t in trials)
    steady = 3600 * (len(ends) - slots) / (ends[-1] - ends[slots - 1]).total_seconds()
    return len(trials), (ends[-1] - start).total_seconds(), steady


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        warm = study_yaml(tmp, "warm", 1, 1, "optuna", args.cpus)
        run(warm, 1, args.cpus)  # trains the teacher once; every study below starts from a copy of it
        rows = []
        for label, backend, workers, threads in (("optuna x1", "optuna", 1, args.cpus),
                                                 (f"optuna x{args.cpus}", "optuna", args.cpus, 1),
                                                 ("ray", "ray", 1, 1)):
            name = label.replace(" ", "_")
            study = study_yaml(tmp, name, args.trials, args.epochs, backend, args.cpus)
            (tmp / name).mkdir()
            shutil.copy(tmp / "warm" / "teacher.pt", tmp / name / "teacher.pt")
            wall = run(study, workers, threads)
            n, span, steady = trial_span(study, args.cpus)
            rows.append((label, n, wall, 3600 * n / wall, 3600 * n / span, steady))
    print(f"digits, {args.trials} searched trials + 2 baselines, {args.epochs} epochs, {args.cpus} cores")
    print(f"{'backend':12s} {'trials':>6s} {'wall s':>7s} {'trials/h (wall)':>16s} {'trials/h (trials)':>18s} "
          f"{'trials/h (steady)':>18s}")
    for label, n, wall, per_wall, per_span, steady in rows:
        print(f"{label:12s} {n:6d} {wall:7.1f} {per_wall:16.0f} {per_span:18.0f} {steady:18.0f}")
    ray = rows[-1]
    for ref in rows[:-1]:
        print(f"ray / {ref[0]}: {ray[3] / ref[3]:.2f}x (wall), {ray[4] / ref[4]:.2f}x (between first and last "
              f"trial), {ray[5] / ref[5]:.2f}x (steady, after each slot's first trial)")


if __name__ == "__main__":
    main()
