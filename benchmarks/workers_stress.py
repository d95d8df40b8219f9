"""Stress the workers protocol: many workers share one study, very short trials, CPU hogs beside them; every
run must end with EXACTLY the requested searched trials, each baseline once, nothing left running.

    python benchmarks/workers_stress.py [--storage sqlite journal postgresql] [--runs 20] [--workers 5]
        [--trials 8] [--hogs 4] [--mean-trial 0.03] [--poll 0.02] [--minutes 3] [--pause] [--cli]

Default mode runs the real search loop (``run_optuna``: the study lock, clean-up of dead/stale trials, the
decision to start a trial, ``study.ask``, the real :class:`~autokd.search.objective.Objective` recording
everything) in forked worker processes, with only the training replaced by a random sleep (mean
``--mean-trial`` s), so hundreds of end-of-study races happen per minute. Heartbeats beat every second with a
3 s grace, so a starved worker's trial may be failed as stale and retried. ``--cli`` runs real
``autokd search --worker k`` processes (1-epoch trials on a sliver of digits) instead: slower, end to end.
PostgreSQL: ``--postgres URL`` or ``AUTOKD_TEST_POSTGRES`` (each run gets a fresh database).

Prints one line per failing run (with its trial list: number, state, worker, baseline, retry of, start and
completion times) and ``runs N, failures F`` per storage, with how many trials were failed (stale
heartbeat, dead worker) and retried on the way.
"""

from __future__ import annotations

import argparse
import faulthandler
import multiprocessing as mp
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def study_yaml(path: Path, name: str, storage: str | None, trials: int) -> Path:
    storage_line = f"storage: '{storage}', " if storage else ""
    path.write_text(f"""
name: {name}
device: cpu
data: {{name: digits, train_fraction: 0.1}}
teacher: {{name: cnn, kwargs: {{width: 2}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
output_dir: {path.parent / name}
search: {{{storage_line}sampler: random, pruner: none, trials: {trials}, epochs: 1,
          heartbeat_interval: 1, heartbeat_grace: 3}}
""")
    return path


class SleepTrainer:
    """Stands in for the trainer: sleeps a random time, reports one epoch, returns plausible metrics."""

    def __init__(self, rng: random.Random, mean: float) -> None:
        self.rng, self.mean = rng, mean

    def fit(self, recipe, *, epochs=None, report=None, measure=True):
        took = self.rng.expovariate(1 / self.mean)
        time.sleep(took)
        acc = self.rng.random()
        stopped = bool(report(0, acc)) if report is not None else False
        return SimpleNamespace(metrics={"val_acc": acc, "epochs": 1, "params": 100, "train_time_s": took},
                               history=[{"epoch": 0, "val_acc": acc}], stopped=stopped)


def loop_worker(cfg_path: str, k: int, mean: float, poll: float) -> None:
    """One worker of the default mode (a forked process): the real loop, sleeping instead of training.
    SIGUSR1 prints its threads' stacks (a worker that does not finish)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    import torch

    from autokd.config import StudyConfig
    from autokd.search.backends.optuna_backend import make_pruner, make_sampler, run_optuna
    from autokd.search.backends.storage import open_study
    from autokd.search.run import open_space

    cfg = StudyConfig.load(cfg_path)
    space = open_space(cfg)
    study = open_study(cfg, multi_objective=False, sampler=make_sampler(cfg, space), pruner=make_pruner(cfg, 1))
    trainer = SleepTrainer(random.Random(f"{cfg.name}:{k}"), mean)
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"), trial_trainer=lambda: trainer)
    run_optuna(ctx, space, study, trials=cfg.search.trials, timeout=None, epochs=1, multi_objective=False,
               worker=str(k), poll=poll)


def pause_one(procs, rng: random.Random) -> str:
    """Stop a random worker (SIGSTOP) past the heartbeat grace, then let it go on: its trial is failed as
    stale and retried by another worker meanwhile (a starved or suspended process)."""
    time.sleep(rng.uniform(2.0, 4.0))
    alive = [p for p in procs if p.is_alive()]
    if not alive:
        return "nothing to pause"
    victim = rng.choice(alive)
    os.kill(victim.pid, signal.SIGSTOP)
    stopped = time.strftime("%H:%M:%S")
    time.sleep(5.0)
    os.kill(victim.pid, signal.SIGCONT)
    return f"paused {victim.pid} {stopped}-{time.strftime('%H:%M:%S')}"


def hog() -> None:
    while True:
        pass


def fresh_postgres(admin: str) -> str:
    import psycopg

    name = f"autokd_stress_{secrets.token_hex(5)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name


def drop_postgres(admin: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def check(cfg_path: Path, trials: int, seen: dict[str, int]) -> list[str]:
    """What is wrong with the finished study (empty when it is exact); adds its failed and retried trials
    to ``seen``."""
    import optuna

    from autokd.config import StudyConfig
    from autokd.search import trial_record as tr
    from autokd.search.backends.storage import load_study

    cfg = StudyConfig.load(cfg_path)
    done = load_study(cfg).get_trials(deepcopy=False)
    S = optuna.trial.TrialState
    problems = []
    seen["failed"] += sum(t.state == S.FAIL for t in done)
    seen["retries"] += sum("failed_trial" in t.system_attrs for t in done)
    searched = [t for t in done if not tr.is_baseline(t) and t.state in (S.COMPLETE, S.PRUNED)]
    if len(searched) != trials:
        problems.append(f"{len(searched)} searched trials for {trials}")
    if any(t.state in (S.RUNNING, S.WAITING) for t in done):
        problems.append("trials left running or waiting")
    base = [(tr.baseline_of(t), tr.student_of(t)) for t in done if tr.is_baseline(t) and t.state == S.COMPLETE]
    if len(set(base)) != len(base):
        problems.append(f"a baseline ran twice: {sorted(map(str, base))}")
    if problems:
        for t in done:
            problems.append(
                f"  #{t.number} {t.state.name:8} worker={t.user_attrs.get(tr.Key.WORKER.value)} "
                f"baseline={tr.baseline_of(t) and tr.baseline_of(t).value} "
                f"retry_of={t.system_attrs.get('failed_trial')} fail={tr.fail_reason_of(t)} "
                f"prune={t.user_attrs.get(tr.Key.PRUNE_REASON.value)} "
                f"start={t.datetime_start and t.datetime_start.time()} "
                f"end={t.datetime_complete and t.datetime_complete.time()}")
    return problems


def one_run(kind: str, i: int, tmp: Path, args, seen: dict[str, int]) -> list[str]:
    storage = {"sqlite": None, "journal": f"journal:///{tmp}/s{i}.log"}.get(kind)
    if kind == "postgresql":
        storage = fresh_postgres(args.postgres)
    path = study_yaml(tmp / f"s{kind}{i}.yaml", f"s{kind}{i}", storage, args.trials)
    try:
        if args.cli:
            env = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            procs = [subprocess.Popen([sys.executable, "-m", "autokd", "search", str(path), "--threads", "1",
                                       "--worker", str(k)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=env, cwd=ROOT, text=True) for k in range(args.workers)]
            outs = [p.communicate(timeout=600)[0] for p in procs]
            codes = [p.returncode for p in procs]
        else:
            ctx = mp.get_context("fork")
            procs = [ctx.Process(target=loop_worker, args=(str(path), k, args.mean_trial, args.poll))
                     for k in range(args.workers)]
            for p in procs:
                p.start()
            paused = pause_one(procs, random.Random(i)) if args.pause else ""
            deadline = time.monotonic() + args.run_timeout
            for p in procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
            outs, codes = [""] * len(procs), [p.exitcode for p in procs]
            hung = [p for p in procs if p.is_alive()]
            if hung:
                print(f"hung at {time.strftime('%H:%M:%S')} ({paused}): " + ", ".join(
                    f"{p.pid} {Path(f'/proc/{p.pid}/stat').read_text().split()[2]} "
                    f"{Path(f'/proc/{p.pid}/wchan').read_text()}" for p in hung), flush=True)
            for p in hung:
                if p.is_alive():  # hung: show where, then stop it
                    os.kill(p.pid, signal.SIGUSR1)
                    time.sleep(1.0)
                    p.kill()
                    p.join()
        problems = [f"worker {k} exited {c}: {o[-1500:]}" for k, (c, o) in enumerate(zip(codes, outs, strict=True))
                    if c != 0]
        return problems + check(path, args.trials, seen)
    finally:
        if kind == "postgresql":
            drop_postgres(args.postgres, storage)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", nargs="+", default=["sqlite", "journal", "postgresql"])
    ap.add_argument("--runs", type=int, default=20, help="runs per storage (stops early at --minutes)")
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--hogs", type=int, default=4, help="busy-looping processes beside the workers")
    ap.add_argument("--mean-trial", type=float, default=0.03, help="mean seconds of one stand-in trial")
    ap.add_argument("--poll", type=float, default=0.02, help="seconds an idle worker waits between decisions")
    ap.add_argument("--minutes", type=float, default=3.0, help="time cap per storage")
    ap.add_argument("--run-timeout", type=float, default=120.0, help="seconds before a run counts as hung")
    ap.add_argument("--pause", action="store_true", help="suspend a random worker past the heartbeat grace")
    ap.add_argument("--cli", action="store_true", help="real `autokd search` worker processes")
    ap.add_argument("--postgres", default=os.environ.get("AUTOKD_TEST_POSTGRES"))
    args = ap.parse_args()
    if "postgresql" in args.storage and not args.postgres:
        print("postgresql: skipped (no --postgres URL or AUTOKD_TEST_POSTGRES)")
        args.storage = [s for s in args.storage if s != "postgresql"]
    # the forked workers inherit these instead of importing them again
    import optuna  # noqa: F401

    import autokd.search.backends.optuna_backend  # noqa: F401
    import autokd.search.objective  # noqa: F401

    hogs = [mp.get_context("fork").Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    total_fail = 0
    try:
        with tempfile.TemporaryDirectory() as d:
            for kind in args.storage:
                t0, runs, failures, seen = time.monotonic(), 0, 0, {"failed": 0, "retries": 0}
                while runs < args.runs and time.monotonic() - t0 < args.minutes * 60:
                    problems = one_run(kind, runs, Path(d), args, seen)
                    runs += 1
                    if problems:
                        failures += 1
                        print(f"{kind} run {runs}: FAIL {problems[0]}")
                        print("\n".join(problems[1:]), flush=True)
                print(f"{kind}: runs {runs}, failures {failures} ({time.monotonic() - t0:.0f} s, "
                      f"{args.workers} workers, {args.trials} trials, {args.hogs} hogs; {seen['failed']} "
                      f"trials failed, {seen['retries']} retries along the way)", flush=True)
                total_fail += failures
    finally:
        for h in hogs:
            h.terminate()
            h.join()
    sys.exit(1 if total_fail else 0)


if __name__ == "__main__":
    main()
