"""Trace of the tree samplers' suggestions: every trial's parameters (and evolution's parents) in seeded studies,
written as JSON lines, so that two versions of the samplers can be compared with ``diff`` (a change meant to
keep the samplers' behaviour must leave the trace identical).

Studies: each space in ``--spaces`` x each sampler setting in ``SETTINGS`` x three ways of running it:
``seq`` (``study.optimize``), ``batch`` (three trials asked at once and told in a shuffled order: trials
finish out of order and are running while others are sampled) and ``workers`` (two samplers with their own
seeds sharing one in-memory storage, taking turns; the second is a pickled copy of the first's sampler mid-study).
The objective ignores the parameters' meaning: a seeded random value, with some trials failed, pruned after
reporting intermediate values, or diverged; two parameter-less baselines and (after two searched trials) one
partially enqueued trial come first; every study has ``--trials`` trials. The first half of the settings maximise, the rest minimise::

    python benchmarks/tree_sampler_trace.py --trials 200 --out before.jsonl
    python benchmarks/tree_sampler_trace.py --trials 200 --out after.jsonl && diff before.jsonl after.jsonl
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    ("mcts", {}),
    ("mcts", {"leaf_decay": 0.0}),
    ("mcts", {"leaf_decay": 1.0, "c": 1.0, "virtual_loss": False, "n_startup_leaf": 1}),
    ("evolution", {"population_size": 16}),
    ("evolution", {"population_size": 6, "tournament_size": 2, "mutation_prob": 0.3, "crossover_prob": 0.5}),
]


def _objective(space, rng: random.Random):
    import optuna

    from autokd.search import trial_record
    from autokd.search.space.suggest import suggest_params

    def objective(trial) -> float:
        if trial_record.is_baseline(trial):
            return 0.5
        suggest_params(space.tree(), trial)
        u, v = rng.random(), rng.random()
        trial.report(v * 0.8, 0)
        if u < 0.06:
            raise RuntimeError("failed trial")
        if u < 0.10:
            trial.set_user_attr("prune_reason", "training diverged at epoch 1, step 2 (loss=nan)")
            raise optuna.TrialPruned("training diverged")
        trial.report(v * 0.9, 1)
        if u < 0.18:
            raise optuna.TrialPruned()
        return v

    return objective


def _prime(study) -> None:
    from autokd.search import trial_record

    for kind in (trial_record.Baseline.CE_ONLY, trial_record.Baseline.KD):
        study.enqueue_trial({}, user_attrs=trial_record.baseline_attrs(kind, None))


def _run_one(study, objective) -> None:
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))


def _tell(study, trial, objective) -> None:
    import optuna

    try:
        study.tell(trial, objective(trial))
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    except RuntimeError:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def run(space_name: str, kind: str, kw: dict, mode: str, direction: str, trials: int) -> list[dict]:
    import optuna

    from autokd.search import SearchSpace, samplers

    space = SearchSpace.load(ROOT / "search_spaces" / f"{space_name}.yaml")
    rng = random.Random(f"{space_name}/{kind}/{sorted(kw.items())}/{mode}")
    objective = _objective(space, rng)
    sampler = samplers.create(kind, seed=11, space=space, **kw)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction=direction, sampler=sampler, study_name="trace")
    _prime(study)
    for _ in range(4):  # the two baselines, then two searched trials
        _run_one(study, objective)
    half = {n: v for n, v in list(study.trials[-1].params.items())[:1]}
    if half:
        study.enqueue_trial(half)
    if mode == "seq":
        study.optimize(objective, n_trials=trials - 4, catch=(RuntimeError,))
    elif mode == "batch":
        while len(study.trials) < trials:
            asked = [study.ask() for _ in range(3)]
            rng.shuffle(asked)
            for t in asked:
                _tell(study, t, objective)
    else:
        other = optuna.load_study(study_name="trace", storage=storage, sampler=samplers.create(
            kind, seed=12, space=space, **kw))
        workers = [study, other]
        for i in range(trials - 4):
            if i == trials // 2:
                other.sampler = pickle.loads(pickle.dumps(study.sampler))
            _run_one(workers[i % 2], objective)
    out = []
    for t in study.trials:
        out.append({"number": t.number, "state": t.state.name, "params": t.params,
                    "parents": t.system_attrs.get("evolution:parents")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--spaces", nargs="+", default=["primitives", "logits", "digits"])
    ap.add_argument("--modes", nargs="+", default=["seq", "batch", "workers"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n_trials = 0
    t0 = time.perf_counter()
    with args.out.open("w") as f:
        for space in args.spaces:
            for i, (kind, kw) in enumerate(SETTINGS):
                direction = "maximize" if i % 2 == 0 else "minimize"
                for mode in args.modes:
                    t1 = time.perf_counter()
                    rows = run(space, kind, kw, mode, direction, args.trials)
                    n_trials += len(rows)
                    for row in rows:
                        f.write(json.dumps({"space": space, "sampler": kind, "kw": kw, "mode": mode, **row},
                                           sort_keys=True, default=repr) + "\n")
                    print(f"{space:10s} {kind:9s} {json.dumps(kw):90s} {mode:7s} {len(rows)} trials "
                          f"{time.perf_counter() - t1:.1f} s", flush=True)
    print(f"{n_trials} trials in {time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
