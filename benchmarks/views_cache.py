"""KD / CE-only epoch time on the field's standard pair (resnet32x4 -> resnet8x4, 32x32 inputs, batch 64) with
CIFAR-style crop+flip: teacher online vs the augmented-view teacher cache (FKD); and, optionally, accuracy
with either source over a few seeds (same data, student, optimiser).

Synthetic data in CIFAR layout, so it runs without downloads: ``--dataset fake`` (3x32x32 tensors in memory,
``augment: crop_flip`` applied to whole batches) or ``--dataset cifar10`` (the same kind of images written as
the official CIFAR-10 pickles and read by autokd's ``cifar10`` loader: PIL images through torchvision-style
pad-crop+flip, one image at a time, as a real CIFAR study trains). Prints ratios measured in one run, e.g.::

    python benchmarks/views_cache.py --n 960 --repeats 3
    python benchmarks/views_cache.py --dataset cifar10 --n 960 --repeats 3
    python benchmarks/views_cache.py --accuracy --seeds 3 --epochs 8 --teacher-epochs 8 --n 1200 --noise 0.8 \
        --teacher resnet20 --student resnet8 --views 4   # the accuracy check, smaller models
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autokd import data, models
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import OnlineTeacher, Trainer, make_teacher_source


def _recipes(student: str, epochs: int, bs: int, seed: int = 0) -> dict[str, Recipe]:
    optim = OptimSpec(epochs=epochs, batch_size=bs, precision="fp32")
    spec = StudentSpec(name=student)
    return {"ce": Recipe(student=spec, ce_weight=1.0, optim=optim, seed=seed),
            "kd": Recipe(student=spec, ce_weight=0.1, optim=optim, seed=seed,
                         terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})])}


def cifar_layout(root: Path, n: int, noise: float) -> Path:
    """``n`` learnable synthetic 32x32 RGB images of 10 classes (a smooth class pattern plus noise, as uint8)
    written as the official CIFAR-10 python pickles (5 train batches + the test batch) under ``root``."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    protos = rng.normal(size=(10, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)  # (10, 3, 32, 32)
    per = max(10, n // 6)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=per)
        x = protos[labels] + noise * rng.normal(size=(per, 3, 32, 32))
        pixels = np.clip(128 + 40 * x, 0, 255).astype(np.uint8).reshape(per, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": pixels, b"labels": labels.tolist()}, f)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("fake", "cifar10"), default="fake",
                    help="in-memory tensors, or PIL images read from CIFAR-10 pickles")
    ap.add_argument("--n", type=int, default=960, help="synthetic images in all splits (70%% train)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--noise", type=float, default=1.5, help="fake data noise (lower: an easier task)")
    ap.add_argument("--teacher", default="resnet32x4")
    ap.add_argument("--student", default="resnet8x4")
    ap.add_argument("--views", type=int, default=8, help="stored views per image (K)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed 1-epoch fits per variant (median)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--accuracy", action="store_true", help="also train to compare accuracy (slow)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the accuracy runs")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dev = torch.device("cpu")
    if args.dataset == "fake":
        bundle = data.create("fake", image_size=32, channels=3, n=args.n, num_classes=args.classes,
                             noise=args.noise, augment="crop_flip", seed=0, val_fraction=0.15, test_fraction=0.15)
    else:  # 5/6 of n in the official train batches, 15 % of them carved for val
        root = cifar_layout(Path(tempfile.mkdtemp(prefix="autokd-cifar-")), args.n, args.noise)
        bundle = data.create("cifar10", root=root, val_fraction=0.15)
    torch.manual_seed(0)
    teacher = models.create(args.teacher, bundle.num_classes, in_channels=3)
    if args.accuracy:
        r = Recipe(student=StudentSpec(name=args.teacher), optim=OptimSpec(epochs=args.teacher_epochs))
        fit = Trainer(bundle, device=dev).fit(r, measure=False)
        teacher.load_state_dict(fit.student.state_dict())
        print(f"teacher {args.teacher}: val acc {fit.metrics['val_acc']:.3f}")
    teacher.eval().requires_grad_(False)
    cache = tempfile.mkdtemp(prefix="autokd-views-")
    views = make_teacher_source(f"views:{args.views}", teacher, bundle, dev, cache_dir=cache)
    t0 = time.perf_counter()
    views.train_loader(bundle, args.batch_size, 0)  # builds the cache (once per study)
    build = time.perf_counter() - t0
    trainers = {"ce_only": Trainer(bundle, device=dev),
                "kd_online": Trainer(bundle, teacher=teacher, teacher_source=OnlineTeacher(teacher), device=dev),
                "kd_views": Trainer(bundle, teacher=teacher, teacher_source=views, device=dev)}
    rec = _recipes(args.student, 1, args.batch_size)
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for name, tr in trainers.items():
            res = tr.fit(rec["ce" if name == "ce_only" else "kd"], measure=False)
            times[name].append(res.history[0]["epoch_time_s"])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.dataset} 3x32x32 crop+flip: {len(bundle.train)} training images, batch {args.batch_size}, "
          f"{args.teacher} -> {args.student}, K={args.views}, torch threads {torch.get_num_threads()}")
    for k, v in med.items():
        print(f"  {k:10s} median epoch time {v:8.3f} s")
    print(f"  views cache build (once per study, {args.views} teacher passes) {build:8.3f} s")
    print(f"ratio kd_online / ce_only = {med['kd_online'] / med['ce_only']:.2f}")
    print(f"ratio kd_views / ce_only = {med['kd_views'] / med['ce_only']:.2f}   (goal <= 1.10)")
    print(f"ratio kd_views / kd_online = {med['kd_views'] / med['kd_online']:.2f}")
    if not args.accuracy:
        return
    accs: dict[str, list[float]] = {"kd_online": [], "kd_views": [], "ce_only": []}
    for seed in range(args.seeds):
        rec = _recipes(args.student, args.epochs, args.batch_size, seed)
        for name in accs:
            res = trainers[name].fit(rec["ce" if name == "ce_only" else "kd"], measure=False)
            accs[name].append(trainers[name].test(res.student))
    for k, v in accs.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"  {k:10s} test acc {statistics.mean(v):.3f} +- {sd:.3f} over {len(v)} seeds")


if __name__ == "__main__":
    main()
