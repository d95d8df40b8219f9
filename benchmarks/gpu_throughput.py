"""CIFAR-sized KD trials per hour on one GPU: 1, 2, 4 and 8 concurrent trial processes, fp32 vs bf16 (fp16
with ``--precisions``), and the teacher-cache ratio (KD epoch time with the teacher online / with the
augmented-view cache / CE-only).

Workload: resnet32x4 -> resnet8x4, synthetic 3x32x32 images with CIFAR crop+flip (``fake``, no download),
batch 64, one epoch per trial, the teacher served from the views cache (built once, shared by every process).
``--smoke`` swaps in resnet8 -> resnet8 and tiny sizes. One command, under 5 minutes on a current GPU, prints a table::

    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --n 20000 --trials 4 --precisions fp32 bf16 fp16

Without CUDA it prints one line and exits (``--device cpu --smoke`` runs the same code tiny, as a check).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time

WORKLOAD = {"teacher": "resnet32x4", "student": "resnet8x4", "classes": 10, "batch": 64}


def _setup(args, device: str):
    import torch

    from autokd import data, models
    from autokd.train import Trainer, make_teacher_source

    bundle = data.create("fake", image_size=32, channels=3, n=args.n, num_classes=WORKLOAD["classes"],
                         augment="crop_flip", seed=0)
    torch.manual_seed(0)  # the same teacher weights in every process: the same cache key
    teacher = models.create(args.teacher, bundle.num_classes, in_channels=3).to(device).eval()
    teacher.requires_grad_(False)
    views = make_teacher_source(f"views:{args.views}", teacher, bundle, torch.device(device), cache_dir=args.cache)
    return bundle, teacher, views, Trainer


def _recipe(args, precision: str, kd: bool = True, seed: int = 0):
    from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec

    terms = [TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})] if kd else []
    return Recipe(student=StudentSpec(name=args.student), ce_weight=0.1 if kd else 1.0, terms=terms,
                  seed=seed, optim=OptimSpec(epochs=1, batch_size=WORKLOAD["batch"], precision=precision))


def _worker(args, device: str, precision: str, threads: int, out) -> None:
    import torch

    torch.set_num_threads(threads)
    bundle, teacher, views, Trainer = _setup(args, device)
    tr = Trainer(bundle, teacher=teacher, teacher_source=views, device=device)
    tr.fit(_recipe(args, precision), measure=False)  # warm-up (allocator, kernels), not counted
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.time()
    for s in range(args.trials):
        tr.fit(_recipe(args, precision, seed=s + 1), measure=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out.put((t0, time.time(), args.trials))


def throughput(args, device: str, procs: int, precision: str) -> float:
    """Trials per hour of ``procs`` concurrent processes (from the first counted start to the last end)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    from autokd.train.precision import available_cores

    cores = max(1, available_cores() // procs)
    ps = [ctx.Process(target=_worker, args=(args, device, precision, cores, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a worker failed (exit code {p.exitcode})")
    wall = max(r[1] for r in res) - min(r[0] for r in res)
    return sum(r[2] for r in res) / wall * 3600


def cache_ratio(args, device: str, precision: str) -> tuple[float, float]:
    """KD epoch time with the teacher online / with the views cache, each over CE-only."""
    from autokd.train import OnlineTeacher

    bundle, teacher, views, Trainer = _setup(args, device)
    runs = {"ce": (Trainer(bundle, device=device), False),
            "online": (Trainer(bundle, teacher=teacher, teacher_source=OnlineTeacher(teacher), device=device), True),
            "views": (Trainer(bundle, teacher=teacher, teacher_source=views, device=device), True)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(3):
        for k, (tr, kd) in runs.items():
            t = tr.fit(_recipe(args, precision, kd=kd), measure=False).history[0]["epoch_time_s"]
            if rep:  # the first round warms up
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return med["online"] / med["ce"], med["views"] / med["ce"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="synthetic images in all splits (70%% train)")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--trials", type=int, default=2, help="counted trials per process")
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a check of the script itself)")
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device on this machine; run it where `torch.cuda.is_available()` is True")
        sys.exit(1)
    args.teacher, args.student = WORKLOAD["teacher"], WORKLOAD["student"]
    if args.smoke:
        args.n, args.views, args.trials, args.procs = 200, 2, 1, [1, 2]
        args.teacher, args.student = "resnet8", "resnet8"
    args.cache = args.cache or tempfile.mkdtemp(prefix="autokd-gpu-")
    t_start = time.time()
    bundle, _, views, _ = _setup(args, args.device)
    t0 = time.time()
    views.train_loader(bundle, WORKLOAD["batch"], 0)  # build the shared views cache once
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{name}: {args.teacher} -> {args.student}, {len(bundle.train)} training images 3x32x32 "
          f"crop+flip, batch {WORKLOAD['batch']}, 1 epoch/trial, K={args.views} views (cache built in "
          f"{time.time() - t0:.1f} s)")
    print(f"{'precision':>9s} | {'KD online/CE':>12s} | {'KD views/CE':>11s} | "
          + " | ".join(f"{p} proc trials/h" for p in args.procs))
    for prec in args.precisions:
        online, cached = cache_ratio(args, args.device, prec)
        rates = [throughput(args, args.device, p, prec) for p in args.procs]
        print(f"{prec:>9s} | {online:12.2f} | {cached:11.2f} | "
              + " | ".join(f"{r:{len(str(p)) + 15}.0f}" for p, r in zip(args.procs, rates, strict=True)))
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
