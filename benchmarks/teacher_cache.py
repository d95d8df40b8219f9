"""Epoch time of a KD trial on digits: cached vs online teacher, and vs a CE-only student.

Prints ratios measured in one run (same process, same data, same student), e.g.::

    python benchmarks/teacher_cache.py --epochs 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autokd import data, models
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import CachedTeacher, OnlineTeacher, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--teacher-width", type=int, default=32)
    ap.add_argument("--student-width", type=int, default=4)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    torch.manual_seed(0)
    bundle = data.create("digits", seed=0, train_fraction=args.train_fraction)
    teacher = models.create("cnn", bundle.num_classes, in_channels=1, width=args.teacher_width).eval()
    dev = torch.device("cpu")
    optim = OptimSpec(epochs=args.epochs, batch_size=args.batch_size)
    student = StudentSpec(name="cnn", kwargs={"width": args.student_width})
    ce = Recipe(student=student, ce_weight=1.0, optim=optim)
    kd = Recipe(student=student, ce_weight=0.1, optim=optim,
                terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})])
    cached = CachedTeacher(teacher, bundle, dev)
    t0 = time.perf_counter()
    cached.batch(torch.zeros(1), torch.zeros(1, dtype=torch.long))  # fill the cache once
    fill = time.perf_counter() - t0
    runs = {
        "ce_only": Trainer(bundle, device=dev),
        "kd_online": Trainer(bundle, teacher=teacher, teacher_source=OnlineTeacher(teacher), device=dev),
        "kd_cached": Trainer(bundle, teacher=teacher, teacher_source=cached, device=dev),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for name, tr in runs.items():
            res = tr.fit(kd if name != "ce_only" else ce, measure=False)
            times[name] += [h["epoch_time_s"] for h in res.history[1:]] or [res.history[0]["epoch_time_s"]]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"digits: {len(bundle.train)} training images, batch {args.batch_size}, "
          f"teacher cnn(width={args.teacher_width}), student cnn(width={args.student_width}), "
          f"torch threads {torch.get_num_threads()}")
    for k, v in med.items():
        print(f"  {k:10s} median epoch time {1000 * v:8.2f} ms")
    print(f"  cache fill (once per study)   {1000 * fill:8.2f} ms")
    print(f"ratio kd_online / ce_only = {med['kd_online'] / med['ce_only']:.2f}")
    print(f"ratio kd_cached / ce_only = {med['kd_cached'] / med['ce_only']:.2f}")
    print(f"ratio kd_cached / kd_online = {med['kd_cached'] / med['kd_online']:.2f}")


if __name__ == "__main__":
    main()
