"""Do zero-cost proxies rank students by their DISTILLED accuracy? Kendall τ / Spearman ρ on digits.

Student architectures from ``search_spaces/students.yaml`` (all 40 discrete configurations by default) are
each KD-trained (0.1·CE + 0.9·KD, T=4, the space's recipe) and CE-trained for ``--epochs`` epochs with
``--seeds`` seeds on ``--train-fraction`` of the digits training split, from a cnn width-32 teacher trained
once on the full split (cached in ``--cache-dir``, as are finished runs, so an interrupted run resumes).
Every proxy scores each architecture once — untrained, initialised with seed 0, on one batch of 64
training images — as a search would use it. Then, against distilled test accuracy (mean over seeds):

- Kendall τ-b and Spearman ρ with 95% bootstrap intervals (architectures resampled, ``--bootstrap`` times);
- the same on a parameter-matched slice (the ±``--band`` parameter band that holds the most
  architectures: similar size, different shapes, where size cannot explain the ranking);
- baselines: ``params`` (a proxy too) and vanilla CE-only accuracy (trained, so not zero-cost: an upper
  reference for what a cheap predictor could reach), plus the seed-to-seed τ of distilled accuracy itself
  (the noise ceiling).

    python benchmarks/proxy_correlation.py                      # 40 archs x 3 seeds x 15 epochs
    python benchmarks/proxy_correlation.py --archs 24 --seeds 2 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from autokd import data, proxies
from autokd.config import TeacherSpec
from autokd.proxies.score import build_student, score_student
from autokd.proxies.stats import bootstrap_ci, kendall_tau_b, spearman_rho
from autokd.recipe import OptimSpec, Recipe, TermSpec
from autokd.search.space import SearchSpace
from autokd.search.students import StudentCandidate, enumerate_students, sample_students
from autokd.train import CachedTeacher, Trainer, obtain_teacher

ROOT = Path(__file__).resolve().parents[1]

try:  # scipy when available (it ships with scikit-learn); else the package's own, tested against it
    from scipy import stats as _st

    def kendall(a, b) -> float:
        with warnings.catch_warnings():  # a constant resample is undefined (NaN) and dropped
            warnings.simplefilter("ignore")
            return float(_st.kendalltau(a, b).statistic)

    def spearman(a, b) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(_st.spearmanr(a, b).statistic)

    STATS = f"scipy {__import__('scipy').__version__}"
except ImportError:  # pragma: no cover
    kendall, spearman, STATS = kendall_tau_b, spearman_rho, "autokd.proxies.stats"


def log(msg: str) -> None:
    print(msg, flush=True)


def _recipe(cand: StudentCandidate, kind: str, epochs: int, seed: int) -> Recipe:
    optim = OptimSpec(lr=0.05, batch_size=32, epochs=epochs)
    if kind == "ce":
        return Recipe(student=cand.spec(), ce_weight=1.0, optim=optim, seed=seed)
    return Recipe(student=cand.spec(), ce_weight=0.1, optim=optim, seed=seed,
                  terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})])


def _fmt_ci(v: float, ci: tuple[float, float]) -> str:
    if not math.isfinite(v):
        return f"{'n/a':>20s}"
    return f"{v:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def correlate(pred: list[float], target: list[float], n_boot: int) -> dict:
    keep = [i for i, p in enumerate(pred) if p is not None and math.isfinite(p)]
    p = np.asarray([pred[i] for i in keep], dtype=float)
    t = np.asarray([target[i] for i in keep], dtype=float)
    if len(keep) < 3:
        nan = float("nan")
        return {"n": len(keep), "tau": nan, "tau_ci": (nan, nan), "rho": nan, "rho_ci": (nan, nan)}
    return {"n": len(keep),
            "tau": kendall(p, t), "tau_ci": bootstrap_ci(p, t, kendall, n=n_boot, seed=0),
            "rho": spearman(p, t), "rho_ci": bootstrap_ci(p, t, spearman, n=n_boot, seed=1)}


def matched_slice(params: list[int], band: float) -> tuple[list[int], float]:
    """Indices of the architectures whose parameter counts lie within ±band of a centre; the centre (one of
    the counts) is chosen to hold the most architectures (ties: the smaller centre)."""
    best: list[int] = []
    centre = float(params[0])
    for c in sorted(set(params)):
        idx = [i for i, p in enumerate(params) if (1 - band) * c <= p <= (1 + band) * c]
        if len(idx) > len(best):
            best, centre = idx, float(c)
    return best, centre


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=40, help="architectures (all 40 of the space by default)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--train-fraction", type=float, default=0.25)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--proxy", action="append", dest="proxies", help="proxies to test (default: all)")
    ap.add_argument("--proxy-batch", type=int, default=64)
    ap.add_argument("--band", type=float, default=0.3, help="parameter-matched slice: ± this fraction")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 suits tiny models)")
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "students.yaml"))
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "autokd_proxy_correlation"))
    ap.add_argument("--csv", default=None, help="write per-architecture results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cpu")
    t_start = time.perf_counter()

    # ---- data and teacher (trained once, cached) -----------------------------------------------------
    split = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.3}
    bundle = data.create("digits", train_fraction=args.train_fraction, **split)
    t_bundle = data.create("digits", train_fraction=1.0, **split)
    tspec = TeacherSpec(name="cnn", kwargs={"width": 32}, epochs=args.teacher_epochs, lr=0.05, batch_size=64)
    teacher, tinfo = obtain_teacher(tspec, t_bundle, cache / "teacher", dev, log=log)
    log(f"digits: {bundle.sizes} (students see {args.train_fraction:g} of the training split); teacher "
        f"cnn(width=32) test acc {tinfo.get('test_acc', float('nan')):.4f}; stats: {STATS}; "
        f"torch threads {torch.get_num_threads()}")

    # ---- architectures -------------------------------------------------------------------------------
    space = SearchSpace.load(args.space)
    every = enumerate_students(space)
    if every is None:
        sys.exit("the space has continuous student parameters; this benchmark needs a discrete space")
    cands = every if args.archs >= len(every) else sample_students(space, args.archs, seed=0)
    names = args.proxies or proxies.names()
    log(f"{len(cands)} architectures x {args.seeds} seeds x (KD, CE) x {args.epochs} epochs; "
        f"proxies: {', '.join(names)}")

    # ---- proxy scores (untrained, seed 0, one batch) -------------------------------------------------
    batch = proxies.proxy_batch(bundle, args.proxy_batch, seed=0)
    scores: list[dict] = []
    ptime: dict[str, list[float]] = {n: [] for n in names}
    for c in cands:
        student = build_student(c, bundle.num_classes, bundle.input_shape[0], seed=0)
        s, t, err = score_student(student, teacher, batch, names, seed=0)
        scores.append(s)
        for n in names:
            ptime[n].append(t[n])
        if err:
            log(f"  proxy errors on {c.label}: {err}")
    log(f"proxies scored in {time.perf_counter() - t_start:.1f}s "
        f"(median per architecture: {', '.join(f'{n} {statistics.median(v):.3f}s' for n, v in ptime.items())})")

    # ---- training (cached per run) -------------------------------------------------------------------
    runs_path = cache / "runs.json"
    runs: dict[str, float] = json.loads(runs_path.read_text()) if runs_path.is_file() else {}
    source = CachedTeacher(teacher, bundle, dev)
    trainer = Trainer(bundle, teacher=teacher, teacher_source=source, device=dev)
    tag = f"tf{args.train_fraction:g}|ep{args.epochs}|t{tinfo.get('hash', '')}"
    acc = {k: [[math.nan] * args.seeds for _ in cands] for k in ("kd", "ce")}
    total = len(cands) * args.seeds * 2
    done = 0
    for seed in range(args.seeds):  # seed-major: a partial run already covers every architecture
        for i, c in enumerate(cands):
            for kind in ("kd", "ce"):
                key = f"{c.key}|{kind}|s{seed}|{tag}"
                if key not in runs:
                    t0 = time.perf_counter()
                    res = trainer.fit(_recipe(c, kind, args.epochs, seed), measure=False, eval_split="test")
                    runs[key] = res.metrics["test_acc"]
                    runs_path.write_text(json.dumps(runs))
                    log(f"  [{done + 1}/{total}] seed {seed} {kind} {c.label:42s} test {runs[key]:.4f} "
                        f"({time.perf_counter() - t0:.1f}s, {time.perf_counter() - t_start:.0f}s elapsed)")
                acc[kind][i][seed] = runs[key]
                done += 1

    kd = [statistics.mean(a) for a in acc["kd"]]
    ce = [statistics.mean(a) for a in acc["ce"]]
    params = [int(sum(p.numel() for p in build_student(c, 10, 1).parameters())) for c in cands]

    # ---- per-architecture table --------------------------------------------------------------------
    log("")
    log(f"{'architecture':44s} {'params':>8s} {'CE acc':>14s} {'KD acc':>14s} {'KD-CE':>7s}")
    for i in sorted(range(len(cands)), key=lambda i: -kd[i]):
        sd = statistics.stdev(acc["kd"][i]) if args.seeds > 1 else 0.0
        sdc = statistics.stdev(acc["ce"][i]) if args.seeds > 1 else 0.0
        log(f"{cands[i].label:44s} {params[i]:8d} {ce[i]:.3f} ± {sdc:.3f}  {kd[i]:.3f} ± {sd:.3f}  "
            f"{kd[i] - ce[i]:+.3f}")
    gains = [k - c for k, c in zip(kd, ce, strict=True)]
    log(f"mean KD gain over CE-only: {statistics.mean(gains):+.4f} "
        f"(KD better on {sum(g > 0 for g in gains)} of {len(gains)} architectures)")
    if args.seeds > 1:
        pairs = [(a, b) for a in range(args.seeds) for b in range(a + 1, args.seeds)]
        ceil_tau = statistics.mean(kendall([r[a] for r in acc["kd"]], [r[b] for r in acc["kd"]]) for a, b in pairs)
        log(f"seed-to-seed Kendall τ of distilled accuracy (one seed vs another): {ceil_tau:+.2f}")

    # ---- correlations --------------------------------------------------------------------------------
    sl, centre = matched_slice(params, args.band)
    lo, hi = min(params[i] for i in sl), max(params[i] for i in sl)
    log("")
    log(f"parameter-matched slice: {len(sl)} architectures within ±{args.band:.0%} of {centre:,.0f} parameters "
        f"({lo:,}-{hi:,}): {', '.join(cands[i].label for i in sl)}")
    predictors: list[tuple[str, list[float]]] = [(n, [s[n] for s in scores]) for n in names if n != "params"]
    predictors += [("params (baseline)", [float(p) for p in params]),
                   ("CE-only acc (trained)", ce)]
    log("")
    log(f"rank correlation with distilled test accuracy (mean of {args.seeds} seeds); 95% bootstrap "
        f"intervals over architectures ({args.bootstrap} resamples)")
    head = (f"{'predictor':22s} {'τ all (n=' + str(len(cands)) + ')':>22s} {'ρ all':>22s} "
            f"{'τ matched (n=' + str(len(sl)) + ')':>22s} {'ρ matched':>22s} {'s/arch':>7s}")
    log(head)
    log("-" * len(head))
    results = []
    for name, pred in predictors:
        a = correlate(pred, kd, args.bootstrap)
        m = correlate([pred[i] for i in sl], [kd[i] for i in sl], args.bootstrap)
        key = "params" if name.startswith("params") else name
        secs = statistics.median(ptime[key]) if key in ptime else float("nan")
        results.append((name, a, m))
        note = "" if a["n"] == len(cands) else f"  (n={a['n']})"
        log(f"{name:22s} {_fmt_ci(a['tau'], a['tau_ci']):>22s} {_fmt_ci(a['rho'], a['rho_ci']):>22s} "
            f"{_fmt_ci(m['tau'], m['tau_ci']):>22s} {_fmt_ci(m['rho'], m['rho_ci']):>22s} "
            f"{secs:7.3f}{note}")
    base = next(a for n, a, _ in results if n.startswith("params"))
    winners = [n for n, a, _ in results if not n.startswith(("params", "CE-only")) and a["tau"] > base["tau"]]
    log("")
    log(f"proxies with a higher τ than params on all architectures: {', '.join(winners) or 'none'}"
        f" (point estimates; compare the intervals)")
    log(f"total {time.perf_counter() - t_start:.0f}s")

    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["student", "params", "ce_acc", "kd_acc", *names])
            for i, c in enumerate(cands):
                w.writerow([c.label, params[i], ce[i], kd[i], *[scores[i][n] for n in names]])


if __name__ == "__main__":
    main()
