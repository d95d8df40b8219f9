"""What cheaper trials cost in ranking quality: Kendall τ between low-fidelity and full-fidelity validation
accuracy of recipes sampled from a search space on digits.

Low fidelity = ``search.fidelity``: a fixed, stratified ``--data-fraction`` of the training split (Auto-KD's
sparse training) and ``--low-epochs``; full fidelity = the whole split and ``--epochs``. Same teacher, seeds and
recipes for both; prints τ-b, the top-5 overlap and the time saved, e.g.::

    python benchmarks/fidelity_rank.py --recipes 20 --epochs 10 --low-epochs 3 --data-fraction 0.5
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def kendall_tau_b(a: list[float], b: list[float]) -> float:
    """Kendall's τ-b (ties in either list handled), counted over all pairs."""
    conc = disc = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif (da > 0) == (db > 0):
            conc += 1
        else:
            disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return (conc - disc) / denom if denom else float("nan")


def main() -> None:
    import optuna

    from autokd import data
    from autokd.errors import ConfigError
    from autokd.recipe import OptimSpec, Recipe, StudentSpec
    from autokd.search import SearchSpace
    from autokd.train import Trainer, TrainingDiverged, make_teacher_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--low-epochs", type=int, default=3)
    ap.add_argument("--data-fraction", type=float, default=0.5)
    ap.add_argument("--train-fraction", type=float, default=0.25, help="the study's training split (of digits)")
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "digits.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    dev = torch.device("cpu")
    full = data.create("digits", seed=args.seed, train_fraction=args.train_fraction)
    low = data.train_subset(full, args.data_fraction, args.seed)
    t_recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 32}), optim=OptimSpec(epochs=15))
    teacher = Trainer(full, device=dev).fit(t_recipe, measure=False).student.eval().requires_grad_(False)
    trainers = {name: Trainer(d, teacher=teacher, teacher_source=make_teacher_source("auto", teacher, d, dev),
                              device=dev) for name, d in (("full", full), ("low", low))}
    space = SearchSpace.load(args.space)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=args.seed))
    accs: dict[str, list[float]] = {"full": [], "low": []}
    secs = {"full": 0.0, "low": 0.0}
    kept = 0
    while kept < args.recipes:
        trial = study.ask()
        recipe = space.suggest(trial)
        recipe.seed = args.seed
        row = {}
        try:
            for name, epochs in (("full", args.epochs), ("low", args.low_epochs)):
                t0 = time.perf_counter()
                row[name] = trainers[name].fit(recipe, epochs=epochs, measure=False).metrics["val_acc"]
                secs[name] += time.perf_counter() - t0
        except (TrainingDiverged, ConfigError) as e:  # as in a study: such a trial is pruned, not ranked
            print(f"  skipped a recipe: {str(e)[:100]}")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, row["full"])
        for k in accs:
            accs[k].append(row[k])
        kept += 1
        print(f"  recipe {kept:2d}: full {row['full']:.3f}  low {row['low']:.3f}  ({recipe.student.label()}, "
              f"{len(recipe.terms)} terms)")
    tau = kendall_tau_b(accs["low"], accs["full"])
    top = set(sorted(range(kept), key=lambda i: -accs["full"][i])[:5])
    top_low = set(sorted(range(kept), key=lambda i: -accs["low"][i])[:5])
    print(f"digits train_fraction {args.train_fraction}: {len(full.train)} training images; full = {args.epochs} "
          f"epochs on all, low = {args.low_epochs} epochs on {args.data_fraction:g} ({len(low.train)} images)")
    print(f"Kendall tau-b (low vs full, {kept} recipes) = {tau:.3f}; top-5 overlap {len(top & top_low)}/5; "
          f"time low/full = {secs['low'] / secs['full']:.2f}")


if __name__ == "__main__":
    main()
