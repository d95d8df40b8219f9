"""Workers sharing one study: throughput with 1 and 2 workers, and the storage's own overhead per trial.

    python benchmarks/workers.py [--trials 12] [--epochs 15] [--postgres URL]

1. Throughput: the same digits study (the demo's space, ``--trials`` searched trials of ``--epochs`` epochs,
   plus its baselines) run by ONE worker with one thread and with all cores' threads, then by TWO workers with
   half the threads each (``autokd search --worker k --threads t``), from the same stored teacher. Prints
   trials/hour and the ratio of two workers to the faster single worker (goal on 2 cores: >= 1.8x); then the
   machine's own ceiling for that ratio: one fixed training alone vs two at once, no engine involved.
2. Storage overhead: the per-trial cost of what autokd asks of the storage in a demo-study trial, with a
   no-op training step, exactly as the worker loop asks it: under the study lock the loop's own read (the
   counts that decide whether to start a trial; every 5 s, tidy: dead, unclaimed and stale trials) and the
   ask with the worker's claim and first heartbeat; then the recipe's parameters (the demo space suggested
   by a random sampler: the sampler's own time is not storage) and record, 15 epochs of intermediate values
   each followed by the median pruner's decision, the metrics, and the tell. On SQLite, a journal file and
   PostgreSQL (``--postgres`` or ``AUTOKD_TEST_POSTGRES``; the figure grows with what else the database
   holds: use a fresh one), as a fraction of one trial of the demo study (3 seeds x 15 epochs of a CE-only
   student, the cheapest; goal: <= 2 %) and of one 1-epoch fit.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study_yaml(path: Path, name: str, trials: int, epochs: int, storage: str | None = None) -> Path:
    storage_line = f"storage: '{storage}', " if storage else ""
    path.write_text(f"""
name: {name}
device: cpu
data: {{name: digits, train_fraction: 0.25}}
teacher: {{name: cnn, kwargs: {{width: 16}}, epochs: 5}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
output_dir: out
search: {{{storage_line}sampler: random, pruner: none, trials: {trials}, epochs: {epochs}}}
""")
    return path


def run_workers(study: Path, n: int, threads: int, trials: int | None = None) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    args = [] if trials is None else ["--trials", str(trials)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "autokd", "search", str(study), "--worker", f"w{k}",
                               "--threads", str(threads), *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k in range(n)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed:\n{err[-3000:]}")
    return time.perf_counter() - t0


def throughput(args, tmp: Path) -> None:
    cores = os.cpu_count() or 2
    teacher_dir = tmp / "warm"
    teacher_dir.mkdir()
    warm = study_yaml(teacher_dir / "warm.yaml", "warm", trials=1, epochs=1)
    run_workers(warm, 1, cores)  # trains and stores the teacher once
    rows = []
    recipes = fixed_trials(args.trials)
    for n, threads in sorted({(1, 1), (1, cores), (2, max(1, cores // 2))}):
        d = tmp / f"w{n}t{threads}"
        d.mkdir()
        (d / "out").mkdir()
        os.link(teacher_dir / "out" / "teacher.pt", d / "out" / "teacher.pt")
        study = study_yaml(d / f"w{n}.yaml", "warm", args.trials, args.epochs)
        enqueue(study, recipes)
        wall = run_workers(study, n, threads)
        total = args.trials + 4  # + the CE-only and KD baselines of the space's two students
        rows.append((n, threads, wall, 3600 * total / wall, 3600 * total / trial_span(d / "out" / "study.db")))
    print(f"\nthroughput: digits, {args.trials} searched trials + 4 baselines, {args.epochs} epochs each, "
          f"{cores} cores; the same {args.trials} recipes (enqueued) in every configuration")
    print("(trials/h over the whole command, start-up included, and over the trials: first start to last end)")
    print(f"{'workers':>8s} {'threads':>8s} {'wall s':>8s} {'trials/h':>9s} {'in trials':>10s}")
    for n, t, wall, tph, steady in rows:
        print(f"{n:>8d} {t:>8d} {wall:>8.1f} {tph:>9.0f} {steady:>10.0f}")
    for col, what in ((3, "whole command"), (4, "trials only")):
        one = max(r[col] for r in rows if r[0] == 1)
        two = max(r[col] for r in rows if r[0] == 2)
        print(f"2 workers / the faster single worker, {what}: {two / one:.2f}x (goal >= 1.8x)")
    alone, together = machine_ceiling(args.epochs)
    print(f"the machine's own ceiling: one fixed training (digits KD, the study's teacher and a width-3 CNN, "
          f"1 thread, {args.epochs} epochs x 3) "
          f"takes {alone:.2f} s alone and {together:.2f} s when two processes run it at once: 2 processes "
          f"train {2 * alone / together:.2f}x as much per second as one, with no autokd engine involved")


_TRAIN = r"""
import sys, time, torch
torch.set_num_threads(1)
from autokd import data, models
from autokd.recipe import Recipe, StudentSpec, TermSpec
from autokd.train import Trainer
bundle = data.create("digits", train_fraction=0.25)
teacher = models.create("cnn", bundle.num_classes, in_channels=bundle.input_shape[0], width=16).eval()
trainer = Trainer(bundle, device="cpu", teacher=teacher)
recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 3}), ce_weight=0.1,
                terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})])
trainer.fit(recipe, epochs=1, measure=False)
sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
t0 = time.perf_counter()
for seed in range(3):
    trainer.fit(recipe.with_seed(seed), epochs=int(sys.argv[1]), measure=False)
print(time.perf_counter() - t0)
"""


def machine_ceiling(epochs: int) -> tuple[float, float]:
    """Seconds of one fixed CPU training alone, and the mean when two processes run it at the same moment
    (each started, warmed up, then released together): how much two trainings slow each other down."""
    def run(n: int) -> list[float]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, "-c", _TRAIN, str(epochs)], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(n)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return [float(p.communicate()[0]) for p in procs]

    alone = min(run(1)[0] for _ in range(2))
    together = sum(run(2)) / 2
    return alone, together


def fixed_trials(n: int) -> list[dict]:
    """``n`` recipes of the demo space drawn once (random sampler, seed 0), as Optuna parameters: every
    configuration trains exactly these, so the ratios compare the same work, not two samplers' draws."""
    import optuna

    from autokd.search import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load(ROOT / "search_spaces" / "digits.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def enqueue(study: Path, recipes: list[dict]) -> None:
    """Create the study and enqueue ``recipes`` (its workers then run them before sampling anything)."""
    from autokd.config import StudyConfig
    from autokd.search.backends.storage import open_study

    stored = open_study(StudyConfig.load(study), multi_objective=False, sampler=None, pruner=None)
    for params in recipes:
        stored.enqueue_trial(params, skip_if_exists=False)


def trial_span(db: Path) -> float:
    """Seconds from the first trial's start to the last trial's end in a finished SQLite study."""
    import sqlite3

    with sqlite3.connect(db) as con:
        first, last = con.execute("SELECT MIN(datetime_start), MAX(datetime_complete) FROM trials").fetchone()
    from datetime import datetime

    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


def storage_overhead(args, tmp: Path) -> None:
    import optuna
    import torch

    from autokd import data
    from autokd.config import StudyConfig
    from autokd.recipe import Recipe, StudentSpec
    from autokd.search import SearchSpace
    from autokd.search import trial_record as tr
    from autokd.search.backends.optuna_backend import Decider, make_pruner, run_one_trial
    from autokd.search.backends.storage import open_study
    from autokd.search.batched_writes import IntermediateValues, grouped_writes
    from autokd.search.objective import report_epoch
    from autokd.train import Trainer
    from autokd.train.threads import default_cpu_threads

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # the worker loop runs heartbeats itself
    bundle = data.create("digits", train_fraction=0.25)
    torch.set_num_threads(default_cpu_threads(bundle.input_shape))  # as a study would
    recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 3}), ce_weight=1.0)
    trainer = Trainer(bundle, device="cpu")
    trainer.fit(recipe, epochs=1, measure=False)  # warm-up
    t0 = time.perf_counter()
    for _ in range(3):
        trainer.fit(recipe, epochs=1, measure=False)
    epoch_s = (time.perf_counter() - t0) / 3
    t0 = time.perf_counter()
    for seed in range(3):  # one trial of the demo study: 3 seeds x 15 epochs (CE-only: KD only adds to it)
        trainer.fit(recipe.with_seed(seed), epochs=15, measure=False)
    trial_s = time.perf_counter() - t0
    space = SearchSpace.load(ROOT / "search_spaces" / "digits.yaml")
    metrics = {"val_acc": 0.9, "best_val_acc": 0.9, "params": 1000, "flops": 10_000, "latency_ms": 0.1, "epochs": 1,
               "train_time_s": 1.0, "epoch_time_s": 1.0}

    def objective(trial):  # what Objective does around training
        with grouped_writes(trial):  # what Objective.prepare does: the parameters and the recipe, one write
            recipe = space.suggest(trial)
            tr.record_recipe(trial, recipe)
        values = IntermediateValues(trial)
        for epoch in range(15):  # a demo trial reports each epoch of its first seed and asks the pruner
            if report_epoch(trial, epoch, 0.5 + 0.01 * epoch, prunable=True, multi=False, values=values):
                break
        with grouped_writes(trial, until_tell=True):  # what Objective.finish does: stored with the tell
            values.flush()
            tr.record_metrics(trial, metrics)
        return 0.9

    def one_trial(study, cfg, decide):
        # what run_optuna does before each trial: under the lock, tidy (every few s), decide, ask
        _, trial = decide.next_trial(study, 10**9, "bench:1")
        run_one_trial(study, trial, objective, first_beat=decide.beaten != trial._trial_id)

    storages = {"sqlite": None, "journal": f"journal:///{tmp}/bench.log"}
    pg = args.postgres or os.environ.get("AUTOKD_TEST_POSTGRES")
    if pg:
        storages["postgresql"] = pg
    print(f"\nstorage overhead per trial (n={args.n}), vs one trial of the demo study (3 seeds x 15 epochs, "
          f"{trial_s * 1000:.0f} ms) and vs a single 1-epoch fit ({epoch_s * 1000:.0f} ms)")
    print("(statements: what an RDB storage's engine executes per trial; a journal's appends per trial)")
    print(f"{'storage':>11s} {'ms/trial':>9s} {'% of trial':>11s} {'% of 1 epoch':>13s} {'statements':>11s}")
    floors = []
    for kind, url in storages.items():
        d = tmp / f"st_{kind}"
        d.mkdir()
        cfg_path = study_yaml(d / "s.yaml", f"bench_{kind}_{os.getpid()}", 1, 1, storage=url)
        cfg = StudyConfig.load(cfg_path)
        cfg.search.baselines, cfg.search.pruner = False, "median"
        study = open_study(cfg, multi_objective=False, sampler=optuna.samplers.RandomSampler(seed=0),
                           pruner=make_pruner(cfg, 15))
        decide = Decider(cfg, None)
        for _ in range(5):  # warm-up; also past the median pruner's 4 start-up trials
            one_trial(study, cfg, decide)
        calls = count_calls(study._storage)
        gc.freeze()  # as the worker loop does (run_optuna): a full collection then skips the long-lived objects
        try:
            t0 = time.perf_counter()
            for _ in range(args.n):
                one_trial(study, cfg, decide)
            per = (time.perf_counter() - t0) / args.n
        finally:
            gc.unfreeze()
        print(f"{kind:>11s} {per * 1000:>9.1f} {100 * per / trial_s:>10.2f}% {100 * per / epoch_s:>12.1f}% "
              f"{calls[0] / args.n:>11.1f}")
        floors.append((kind, transaction_floor(study._storage)))
    for kind, floor in floors:
        if floor is not None:
            print(f"{kind}: one transaction of one statement (checkout, begin, SELECT 1, commit) takes "
                  f"{floor * 1000:.2f} ms on this storage (median of 200)")


def transaction_floor(storage) -> float | None:
    """Median seconds of the smallest transaction an RDB storage runs (``None`` for other storages): a trial's
    storage time is at least its transactions times this."""
    import statistics

    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return None
    from sqlalchemy import text

    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        with engine.begin() as db:
            db.execute(text("SELECT 1"))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_calls(storage) -> list[int]:
    """A counter of the statements an RDB storage's engine executes (the heartbeat's included), or of the
    appends to a journal storage, from now on."""
    calls = [0]
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is not None:
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", lambda *a, **k: calls.__setitem__(0, calls[0] + 1))
    else:
        append = backend.append_logs

        def counted(logs):
            calls[0] += 1
            return append(logs)

        backend.append_logs = counted
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--n", type=int, default=40, help="trials per storage for the overhead measurement")
    ap.add_argument("--postgres", default=None, help="a PostgreSQL database URL for the overhead measurement")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_throughput:
            throughput(args, tmp)
        storage_overhead(args, tmp)


if __name__ == "__main__":
    main()
