"""Engine overhead per trial, and the tree samplers' suggest time on a long study.

(a) ``overhead``: a digits study (SQLite storage or a journal file, MCTS or any sampler, median pruner,
per-epoch reports, the CLI's progress display writing to a file, trial files) of N one-epoch trials. Two
figures, each as a fraction of a trial's mean ``Trainer.fit`` time (goal <= 2 %): the engine's steady cost
per trial -- the time between one trial's training and the next one's (record the result, tell the storage,
report progress, tidy and ask under the study lock, suggest and record the next recipe) -- and, separately,
the study's one-off start (imports, data, storage, context; the teacher excluded) spread over the N trials.
Then the floor under any engine built on Optuna with that sampler: Optuna alone, in memory (nothing
durable, no autokd records), asking, suggesting the same space's recipes and telling a value, per trial.
(b) ``suggest``: an in-memory Optuna study of ``search_spaces/primitives.yaml`` (the largest tree) with a
value-only objective (no training); the median wall time of one whole ``space.suggest(trial)`` (every
sampler call of a trial) over the last 50 of ``--suggest-trials`` trials (goal <= 5 ms at 1,000), and its
median CPU time (the process's own time: on a busy machine the wall time also counts waiting for a core)::

    python benchmarks/engine_overhead.py --trials 20 --suggest-trials 1000 [--storage journal]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def overhead(trials: int, sampler: str, storage: str) -> None:
    from rich.console import Console

    from autokd import train
    from autokd.cli import progress as progress_mod
    from autokd.config import StudyConfig
    from autokd.search.run import run_search
    from autokd.train import trainer as trainer_mod

    tmp = Path(tempfile.mkdtemp(prefix="autokd-overhead-"))
    path = tmp / "study.yaml"
    storage_line = f", storage: 'journal:///{tmp}/study.log'" if storage == "journal" else ""
    path.write_text(f"""
name: overhead
device: cpu
data: {{name: digits, train_fraction: 0.25}}
teacher: {{name: cnn, kwargs: {{width: 8}}, epochs: 2}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search: {{sampler: {sampler}, pruner: median, trials: {trials}, epochs: 1, baselines: false{storage_line}}}
""")
    cfg = StudyConfig.load(path)
    fits: list[float] = []
    spans: list[tuple[float, float]] = []  # (start, end) of every fit
    teacher_s = [0.0]
    fit, obtain = trainer_mod.Trainer.fit, train.obtain_teacher

    def timed_fit(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return fit(self, *a, **k)
        finally:
            t1 = time.perf_counter()
            fits.append(t1 - t0)
            spans.append((t0, t1))

    def timed_obtain(*a, **k):
        t0 = time.perf_counter()
        try:
            return obtain(*a, **k)
        finally:
            teacher_s[0] += time.perf_counter() - t0

    trainer_mod.Trainer.fit, train.obtain_teacher = timed_fit, timed_obtain
    console = progress_mod.console
    progress_mod.console = Console(file=io.StringIO(), width=120)  # what the CLI shows, off screen
    try:
        t0 = time.perf_counter()
        with progress_mod.RichProgress() as progress:
            run_search(cfg, log=lambda *a: None, progress=progress)
        wall = time.perf_counter() - t0
    finally:
        trainer_mod.Trainer.fit, train.obtain_teacher = fit, obtain
        progress_mod.console = console
    trial_fits, trial_spans = fits[-trials:], spans[-trials:]  # the teacher's training is a fit too
    mean_fit = statistics.mean(trial_fits)
    gaps = [b[0] - a[1] for a, b in zip(trial_spans, trial_spans[1:], strict=False)]  # end to next start
    steady = statistics.median(gaps)
    start = trial_spans[0][0] - t0 - teacher_s[0]
    print(f"(a) {trials} one-epoch digits trials ({sampler}, {storage}, median pruner): wall {wall:.1f} s, "
          f"teacher {teacher_s[0]:.1f} s, mean trial fit {1000 * mean_fit:.0f} ms")
    print(f"    engine per trial (median gap between trainings) {1000 * steady:.1f} ms = "
          f"{100 * steady / mean_fit:.1f} % of a 1-epoch trial (goal <= 2 %)")
    print(f"    one-off start {start:.1f} s = {1000 * start / trials:.0f} ms per trial over {trials} trials")
    bare = optuna_alone(max(trials, 20), sampler)
    print(f"    floor: Optuna alone with {sampler} (in memory, same space, nothing recorded) {1000 * bare:.2f} ms "
          f"per trial = {100 * bare / mean_fit:.1f} % of the same trial")


def optuna_alone(trials: int, sampler: str) -> float:
    """Median wall time per trial of Optuna's in-memory ask, the space's suggestion and tell (a random value),
    over the last half of ``trials`` trials, with the sampler the overhead study used."""
    import optuna

    from autokd.search import SearchSpace, samplers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load(ROOT / "search_spaces" / "digits.yaml")
    kw = {"space": space} if samplers.SAMPLERS.meta(sampler).get("uses_space") else {}
    study = optuna.create_study(direction="maximize", sampler=samplers.create(sampler, seed=0, **kw))
    rng = random.Random(0)
    times: list[float] = []
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, rng.random())
        times.append(time.perf_counter() - t0)
    return statistics.median(times[trials // 2:])


def suggest_time(trials: int, sampler: str) -> None:
    import optuna

    from autokd.search import SearchSpace, samplers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load(ROOT / "search_spaces" / "primitives.yaml")
    kw = {"population_size": 16} if sampler == "evolution" else {}
    study = optuna.create_study(direction="maximize", sampler=samplers.create(sampler, seed=0, space=space, **kw))
    rng = random.Random(0)
    times: list[float] = []
    cpu: list[float] = []

    def objective(trial) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        space.suggest(trial)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        return rng.random()

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    total = time.perf_counter() - t0
    last = times[-50:]
    print(f"(b) {sampler:9s} at {trials} trials: median suggest {1000 * statistics.median(last):.2f} ms "
          f"(last 50 trials; max {1000 * max(last):.2f} ms; median CPU {1000 * statistics.median(cpu[-50:]):.2f} "
          f"ms); whole study {total:.1f} s (goal <= 5 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--sampler", default="mcts")
    ap.add_argument("--storage", choices=("sqlite", "journal"), default="sqlite")
    ap.add_argument("--suggest-trials", type=int, default=1000)
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    if not args.skip_overhead:
        overhead(args.trials, args.sampler, args.storage)
    for s in ("mcts", "evolution"):
        suggest_time(args.suggest_trials, s)


if __name__ == "__main__":
    main()
