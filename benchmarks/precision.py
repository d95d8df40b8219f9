"""bf16 (and fp16) autocast vs fp32 on the CPU: KD step time and test accuracy on digits.

Same teacher, student, data, optimiser and seeds for every precision; epoch times interleaved so machine noise
hits every variant alike. Prints ratios measured in one run, e.g.::

    python benchmarks/precision.py --seeds 3 --epochs 10
"""

from __future__ import annotations

import argparse
import statistics

import torch

from autokd import data
from autokd.errors import ConfigError
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer
from autokd.train.precision import resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--teacher-width", type=int, default=32)
    ap.add_argument("--student-width", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16", "fp16"])
    args = ap.parse_args()

    dev = torch.device("cpu")
    bundle = data.create("digits", seed=0, train_fraction=args.train_fraction)
    teacher_recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": args.teacher_width}),
                            optim=OptimSpec(epochs=args.epochs, batch_size=args.batch_size))
    teacher = Trainer(bundle, device=dev).fit(teacher_recipe, measure=False).student.eval().requires_grad_(False)
    trainer = Trainer(bundle, teacher=teacher, device=dev)
    precisions = []
    for p in args.precisions:
        try:
            resolve_precision(p, dev)
            precisions.append(p)
        except ConfigError as e:
            print(f"skipping {p}: {e}")
    times: dict[str, list[float]] = {p: [] for p in precisions}
    accs: dict[str, list[float]] = {p: [] for p in precisions}
    for seed in range(args.seeds):
        for p in precisions:
            r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": args.student_width}), ce_weight=0.1,
                       terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})], seed=seed,
                       optim=OptimSpec(epochs=args.epochs, batch_size=args.batch_size, precision=p))
            res = trainer.fit(r, measure=False)
            steps = -(-len(bundle.train) // args.batch_size)
            times[p] += [h["epoch_time_s"] / steps for h in res.history[1:]]
            accs[p].append(trainer.test(res.student))
    print(f"digits: {len(bundle.train)} training images, batch {args.batch_size}, teacher cnn(width="
          f"{args.teacher_width}), student cnn(width={args.student_width}), KD T=4, {args.epochs} epochs, "
          f"{args.seeds} seeds, torch threads {torch.get_num_threads()}")
    ref = statistics.median(times["fp32"]) if "fp32" in times else None
    for p in precisions:
        t = statistics.median(times[p])
        sd = statistics.stdev(accs[p]) if len(accs[p]) > 1 else 0.0
        ratio = f"  ratio {p}/fp32 step time = {t / ref:.2f}" if ref else ""
        print(f"  {p:5s} median step {1000 * t:7.2f} ms  test acc {statistics.mean(accs[p]):.3f} +- {sd:.3f}{ratio}")


if __name__ == "__main__":
    main()
