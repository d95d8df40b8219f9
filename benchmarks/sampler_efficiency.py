"""Sample efficiency of the tree samplers (mcts, evolution) against TPE and random search.

(a) ``synthetic``: a cheap define-by-run objective with conditional categorical choices (up to 3 levels)
and continuous / log / integer leaves whose optima depend on the branch; known optimum 0 (minimised).
(b) ``digits``: autokd's own study runner on ``search_spaces/primitives.yaml`` (the Auto-KD primitive
distiller space) with a short budget; validation accuracy (maximised), median pruner, no baselines.

For each sampler: best value so far at a few checkpoints (mean and 95 % t-interval over seeds), and
the number of trials needed to reach random search's final best on the same seed (mean over seeds;
a seed that never reaches it counts as budget + 1, and the number of such seeds is shown)::

    python benchmarks/sampler_efficiency.py synthetic --seeds 20 --trials 100
    python benchmarks/sampler_efficiency.py digits --seeds 3 --trials 20 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("mcts", "evolution", "tpe", "random")


# ------------------------------------------------------------------------------------ (a) synthetic
# family -> (offset, optimum of the shared leaf x); every sub-choice adds its own offset
FAMILY = {"conv": (0.20, 1.0), "attn": (0.0, -2.0), "mlp": (0.45, 0.0), "hybrid": (0.10, 3.0)}
CONV_K = {3: 0.10, 5: 0.0, 7: 0.15}
ATTN_HEADS = {1: 0.30, 2: 0.12, 4: 0.0, 8: 0.08}
ATTN_NORM = {"pre": 0.0, "post": 0.05, "none": 0.25}
MLP_DEPTH = {1: 0.10, 2: 0.05, 3: 0.0}
MLP_ACT = {"relu": 0.02, "gelu": 0.0, "tanh": 0.2}
HYB_MIX = {"serial": 0.05, "parallel": 0.0}
HYB_RATIO = {"1:1": 0.1, "1:3": 0.02, "3:1": 0.2}


def _log_pen(v: float, opt: float, scale: float = 0.03) -> float:
    return scale * (math.log10(v) - math.log10(opt)) ** 2


def synthetic(trial, noise: float = 0.0, rng=None) -> float:
    """Tree-structured test function (minimise). Optimum 0.0 at family=attn, heads=4, norm=pre,
    attn.eps=1e-5, attn.lr=3e-4, attn.dropout=0.1, x=-2."""
    fam = trial.suggest_categorical("family", list(FAMILY))
    off, x_opt = FAMILY[fam]
    v = off
    if fam == "conv":
        v += CONV_K[trial.suggest_categorical("conv.kernel", list(CONV_K))]
        v += _log_pen(trial.suggest_float("conv.lr", 1e-4, 1.0, log=True), 3e-3)
        v += 0.1 * abs(math.log2(trial.suggest_int("conv.width", 8, 128, log=True) / 48))
    elif fam == "attn":
        v += ATTN_HEADS[trial.suggest_categorical("attn.heads", list(ATTN_HEADS))]
        norm = trial.suggest_categorical("attn.norm", list(ATTN_NORM))
        v += ATTN_NORM[norm]
        if norm == "pre":
            v += _log_pen(trial.suggest_float("attn.eps", 1e-8, 1e-2, log=True), 1e-5, 0.02)
        v += _log_pen(trial.suggest_float("attn.lr", 1e-5, 1e-1, log=True), 3e-4)
        v += 0.5 * (trial.suggest_float("attn.dropout", 0.0, 0.5) - 0.1) ** 2
    elif fam == "mlp":
        v += MLP_DEPTH[trial.suggest_categorical("mlp.depth", list(MLP_DEPTH))]
        v += MLP_ACT[trial.suggest_categorical("mlp.act", list(MLP_ACT))]
        v += _log_pen(trial.suggest_float("mlp.lr", 1e-4, 1.0, log=True), 1e-2)
    else:
        v += HYB_MIX[trial.suggest_categorical("hybrid.mix", list(HYB_MIX))]
        v += HYB_RATIO[trial.suggest_categorical("hybrid.ratio", list(HYB_RATIO))]
        v += 0.02 * abs(trial.suggest_int("hybrid.blocks", 1, 12) - 6)
    v += 0.02 * (trial.suggest_float("x", -5.0, 5.0) - x_opt) ** 2
    if noise and rng is not None:
        v += float(rng.normal(0.0, noise))
    return v


def make_sampler(name: str, seed: int, kwargs: dict[str, dict[str, Any]]):
    from autokd.search import samplers

    return samplers.create(name, seed=seed, **kwargs.get(name, {}))


def run_synthetic(args) -> dict[str, list[list[float]]]:
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves: dict[str, list[list[float]]] = {s: [] for s in args.samplers}
    for name in args.samplers:
        t0 = time.time()
        for seed in range(args.seeds):
            rng = np.random.RandomState(10_000 + seed)
            study = optuna.create_study(direction="minimize", sampler=make_sampler(name, seed, args.kwargs))
            study.optimize(lambda t, rng=rng: synthetic(t, args.noise, rng), n_trials=args.trials)
            curves[name].append(best_so_far([t.value for t in study.trials], maximize=False))
        print(f"  [synthetic] {name:<9} {args.seeds} seeds x {args.trials} trials: mean final best "
              f"{statistics.mean(c[-1] for c in curves[name]):.4f}  ({time.time() - t0:.1f}s)", flush=True)
    return curves


# ---------------------------------------------------------------------------------------- (b) digits
def digits_config(args):
    from autokd.config import StudyConfig

    cfg = StudyConfig.model_validate({
        "name": "sampler_efficiency",
        "seed": 0,
        "device": "cpu",
        "data": {"name": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.3, "train_fraction": 0.25},
        "teacher": {"name": "cnn", "kwargs": {"width": 32}, "epochs": 30, "lr": 0.05, "batch_size": 64,
                    "train_fraction": 1.0},
        "teacher_cache": "auto",
        "space": str(ROOT / "search_spaces" / "primitives.yaml"),
        "search": {"sampler": "random", "pruner": args.pruner, "trials": args.trials, "epochs": args.epochs,
                   "baselines": False},
        "output_dir": str(Path(args.out).resolve()),
    })
    return cfg


def run_digits(args) -> dict[str, list[list[float]]]:
    import dataclasses

    import optuna
    import torch

    from autokd.search import pruners
    from autokd.search.objective import Objective
    from autokd.search.run import open_context, open_space

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = digits_config(args)
    t0 = time.time()
    space = open_space(cfg)
    ctx = open_context(cfg, space, log=lambda *a: print("  [digits]", *a, flush=True))
    print(f"  [digits] prepared data + teacher in {time.time() - t0:.1f}s; space {cfg.space_path.name}: "
          f"{space.count_configurations():,} discrete configurations", flush=True)
    curves: dict[str, list[list[float]]] = {s: [] for s in args.samplers}
    for seed in range(args.seeds):
        seed_ctx = dataclasses.replace(ctx, cfg=cfg.model_copy(update={"seed": seed}))
        for name in args.samplers:
            t1 = time.time()
            kw = dict(args.kwargs.get(name, {}))
            if name in ("mcts", "evolution"):
                kw.setdefault("space", space)  # what the study runner should pass (sampler_kwargs)
            from autokd.search import samplers

            sampler = samplers.create(name, seed=seed, **kw)
            study = optuna.create_study(direction="maximize", sampler=sampler,
                                        pruner=pruners.create(args.pruner, args.epochs))
            # a primitive combination can fail (e.g. out of memory): count it as a failed trial, go on
            study.optimize(Objective(seed_ctx, space, epochs=args.epochs, multi_objective=False), n_trials=args.trials,
                           gc_after_trial=True, catch=(RuntimeError,))
            values = [t.value if t.state == optuna.trial.TrialState.COMPLETE else None for t in study.trials]
            curves[name].append(best_so_far(values, maximize=True))
            n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
            n_failed = sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
            print(f"  [digits] seed {seed} {name:<9} best val acc {curves[name][-1][-1]:.4f} "
                  f"({n_pruned} pruned, {n_failed} failed, {time.time() - t1:.0f}s)", flush=True)
    return curves


# ------------------------------------------------------------------------------------------ report
def best_so_far(values: list[float | None], maximize: bool) -> list[float]:
    out, best = [], -math.inf if maximize else math.inf
    for v in values:
        if v is not None and math.isfinite(v):
            best = max(best, v) if maximize else min(best, v)
        out.append(best)
    return out


def mean_ci(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    m = statistics.mean(xs)
    if len(xs) < 2:
        return m, math.nan
    from scipy.stats import t

    return m, float(t.ppf(0.975, len(xs) - 1)) * statistics.stdev(xs) / math.sqrt(len(xs))


def trials_to_reach(curve: list[float], target: float, maximize: bool) -> int | None:
    for i, v in enumerate(curve):
        if (v >= target - 1e-12) if maximize else (v <= target + 1e-12):
            return i + 1
    return None


def report(title: str, curves: dict[str, list[list[float]]], maximize: bool, checkpoints: list[int]) -> str:
    budget = max(len(c) for cs in curves.values() for c in cs)
    checks = sorted({min(c, budget) for c in checkpoints} | {budget})
    head = f"{'sampler':<10}" + "".join(f"{'@' + str(c):>18}" for c in checks) + f"{'trials to random best':>26}"
    lines = [title, "best so far: mean ± 95% CI half-width over seeds"
             + (" (higher is better)" if maximize else " (lower is better)"), head, "-" * len(head)]
    targets = [c[-1] for c in curves.get("random", [])]
    for name, cs in curves.items():
        row = f"{name:<10}"
        for c in checks:
            m, h = mean_ci([cur[c - 1] for cur in cs])
            row += f"{m:>11.4f} ± {h:<5.3f}" if math.isfinite(h) else f"{m:>18.4f}"
        if targets:
            hits = [trials_to_reach(cur, tgt, maximize) for cur, tgt in zip(cs, targets, strict=False)]
            never = sum(h is None for h in hits)
            mean = statistics.mean(h if h is not None else budget + 1 for h in hits)
            row += f"{mean:>14.1f}" + (f" ({never}/{len(hits)} never)" if never else " " * 12)
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["synthetic", "digits", "both"], nargs="?", default="synthetic")
    ap.add_argument("--seeds", type=int, default=None, help="default: 20 (synthetic), 3 (digits)")
    ap.add_argument("--trials", type=int, default=None, help="default: 100 (synthetic), 20 (digits)")
    ap.add_argument("--epochs", type=int, default=3, help="digits: epochs per trial")
    ap.add_argument("--pruner", default="median", help="digits: autokd pruner name")
    ap.add_argument("--noise", type=float, default=0.0, help="synthetic: Gaussian noise sd on the value")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--kwargs", default="{}", help='JSON per sampler, e.g. \'{"evolution": {"population_size": 8}}\'')
    ap.add_argument("--checkpoints", default=None, help="comma-separated trial counts")
    ap.add_argument("--threads", type=int, default=1, help="digits: torch threads")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "autokd_sampler_efficiency"),
                    help="digits: study dir (teacher cache)")
    ap.add_argument("--json", default=None, help="write the curves here")
    args = ap.parse_args(argv)
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    args.kwargs = json.loads(args.kwargs)
    sys.path.insert(0, str(ROOT))
    results = {}
    parts = ["synthetic", "digits"] if args.part == "both" else [args.part]
    for part in parts:
        a = argparse.Namespace(**vars(args))
        a.seeds = args.seeds or (20 if part == "synthetic" else 3)
        a.trials = args.trials or (100 if part == "synthetic" else 20)
        default_checks = [10, 25, 50, 100] if part == "synthetic" else [5, 10, 15, 20]
        checks = [int(c) for c in args.checkpoints.split(",")] if args.checkpoints else default_checks
        print(f"== {part}: {a.seeds} seeds x {a.trials} trials; samplers {', '.join(a.samplers)}; "
              f"kwargs {json.dumps(a.kwargs)}" + (f"; {a.epochs} epochs/trial, pruner {a.pruner}"
                                                  if part == "digits" else f"; noise {a.noise}"), flush=True)
        t0 = time.time()
        curves = run_synthetic(a) if part == "synthetic" else run_digits(a)
        title = (f"({'a' if part == 'synthetic' else 'b'}) {part}: {a.seeds} seeds x {a.trials} trials "
                 f"({time.time() - t0:.0f}s)")
        print()
        print(report(title, curves, maximize=(part == "digits"), checkpoints=checks), flush=True)
        print()
        results[part] = curves
    if args.json:
        Path(args.json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
