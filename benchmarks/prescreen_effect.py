"""The same digits student search with and without zero-cost-proxy prescreening.

Runs search_spaces/students.yaml (DisWOT-style student architectures, fixed KD recipe) with one sampler and
seed, once without prescreen and once per proxy with ``prescreen: {proxy, keep, warmup}``; prints the training
epochs each study spent, its best validation accuracy, and the test accuracy of its best recipe retrained with
3 seeds (test split touched only for that final report)::

    python benchmarks/prescreen_effect.py --trials 40 --epochs 10 --proxies diswot params
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from autokd.config import StudyConfig
from autokd.context import StudyContext
from autokd.retrain import retrain
from autokd.search import trial_record as tr
from autokd.search.export import best_trial
from autokd.search.run import run_search as search

ROOT = Path(__file__).resolve().parents[1]


def study_yaml(name: str, args, prescreen: str | None) -> str:
    pre = (f"prescreen: {{proxy: {prescreen}, keep: {args.keep}, warmup: {args.warmup}}}" if prescreen else "")
    return f"""
name: {name}
device: cpu
output_dir: {name}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.3, train_fraction: 0.25}}
teacher: {{name: cnn, kwargs: {{width: 32}}, epochs: 30, train_fraction: 1.0}}
space: {ROOT / 'search_spaces' / 'students.yaml'}
search: {{sampler: {args.sampler}, pruner: none, trials: {args.trials}, epochs: {args.epochs}, baselines: false
          {', ' + pre if pre else ''}}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--keep", type=float, default=0.25)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--sampler", default="tpe")
    ap.add_argument("--proxies", nargs="*", default=["diswot", "params"])
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "autokd-prescreen"))
    args = ap.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    for proxy in [None, *args.proxies]:
        name = f"students_{proxy or 'none'}"
        path = base / f"{name}.yaml"
        path.write_text(study_yaml(name, args, proxy))
        cfg = StudyConfig.load(path)
        t0 = time.time()
        study = search(cfg, log=lambda *a: None)
        wall = time.time() - t0
        epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in study.trials)
        pruned = sum(1 for t in study.trials if t.state.name == "PRUNED")
        best = best_trial(study)
        recipe = tr.recipe_of(best)
        ctx = StudyContext.open(cfg, log=lambda *a: None)
        res = retrain(ctx, recipe, seeds=3, baselines=False, log=lambda *a: None)
        accs = res.rows["recipe"]
        rows.append((proxy or "none", len(study.trials), pruned, epochs, best.values[0], statistics.mean(accs),
                     statistics.stdev(accs), best.user_attrs.get("student"), wall))
        print(f"  {proxy or 'no prescreen':12s} done in {wall:.0f}s", flush=True)
    print(f"\n{args.trials} trials x {args.epochs} epochs, sampler {args.sampler}, keep {args.keep}, "
          f"warmup {args.warmup}")
    print(f"{'prescreen':12s} {'trials':>6s} {'pruned':>6s} {'epochs':>7s} {'best val':>9s} "
          f"{'test (3 seeds)':>17s}  {'wall':>6s}  best student")
    for p, n, pr, ep, val, tm, ts, student, wall in rows:
        print(f"{p:12s} {n:>6d} {pr:>6d} {ep:>7d} {val:>9.4f} {tm:>9.4f} ± {ts:.4f}  {wall:>5.0f}s  {student}")


if __name__ == "__main__":
    main()
