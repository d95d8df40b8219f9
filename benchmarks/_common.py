"""Shared machinery of the method benchmarks: one fixed teacher, one fixed student, several seeds, one table.

Every method is trained the same way (same data split, student, optimiser, epochs and seeds); test accuracy is
read only after training; CE-only and plain KD are measured alongside as the baselines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autokd import data as datasets
from autokd.config import TeacherSpec
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.train import Trainer, TrainingDiverged, make_teacher_source, obtain_teacher


@dataclass
class Method:
    label: str
    terms: list[TermSpec] = field(default_factory=list)
    ce_weight: float = 1.0
    scheme: str = "standard"
    scheme_params: dict[str, Any] = field(default_factory=dict)


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--train-fraction", type=float, default=0.25)
    ap.add_argument("--only", nargs="*", default=None, help="run only these method labels (baselines always run)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "autokd-bench"),
                    help="where the teacher is stored once")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory of one training epoch")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 1 on a shared machine)")
    ap.add_argument("--measure-one", default=None, help=argparse.SUPPRESS)  # internal: one method, fresh process
    return ap


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond by a thread (CPU runs);
    on CUDA, ``torch.cuda.max_memory_allocated`` is used instead."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = _rss_bytes()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._t.join()
        return False


def setup(args, *, teacher: str = "cnn", teacher_kwargs: dict | None = None, device: str = "cpu"):
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    bundle = datasets.create("digits", seed=0, val_fraction=0.2, test_fraction=0.3,
                             train_fraction=args.train_fraction)
    full = datasets.create("digits", seed=0, val_fraction=0.2, test_fraction=0.3, train_fraction=1.0)
    spec = TeacherSpec(name=teacher, kwargs=teacher_kwargs or {}, epochs=30)
    dev = torch.device(device)
    cache = Path(args.cache)
    t_model, info = obtain_teacher(spec, full, cache / f"teacher-{teacher}", dev, log=lambda *a: None)
    source = make_teacher_source("auto", t_model, bundle, dev, cache_dir=None)
    trainer = Trainer(bundle, teacher=t_model, teacher_source=source, device=dev, cache_dir=cache / "helpers")
    if not args.measure_one:
        print(f"teacher {teacher}{teacher_kwargs or ''}: test acc {info.get('test_acc', float('nan')):.4f}; "
              f"student training set {len(bundle.train)} images; device {dev}")
    return trainer


def _one_epoch_peak(recipe: Recipe, trainer) -> int:
    one = recipe.model_copy(deep=True)
    one.optim.epochs = 1
    with PeakRSS(trainer.device) as peak:
        trainer.fit(one, measure=False)
    return peak.peak


def _peak_of(m: Method, recipe: Recipe, trainer, args) -> int:
    """Peak memory of one training epoch. On CPU each method runs in a FRESH process (an allocator that
    already served earlier methods would hide their memory); on CUDA the allocator's own peak is exact."""
    if trainer.device.type == "cuda":
        return _one_epoch_peak(recipe, trainer)
    cmd = [sys.executable, sys.argv[0], "--measure-one", m.label, "--epochs", str(args.epochs),
           "--train-fraction", str(args.train_fraction), "--cache", args.cache]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK ")))


def run(trainer, methods: list[Method], student: StudentSpec, args, *, lr: float = 0.05) -> None:
    optim = OptimSpec(lr=lr, epochs=args.epochs, batch_size=32)
    if args.measure_one:
        m = next(m for m in methods if m.label == args.measure_one)
        recipe = Recipe(student=student, ce_weight=m.ce_weight, terms=m.terms,
                        scheme=SchemeSpec(name=m.scheme, params=m.scheme_params), optim=optim, seed=0)
        print(f"PEAK {_one_epoch_peak(recipe, trainer)}")
        return
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        if args.only and m.label not in args.only and m.label not in ("ce_only", "kd"):
            continue
        accs, epoch_times, peaks, diverged = [], [], [], 0
        t0 = time.time()
        for seed in range(args.seeds):
            recipe = Recipe(student=student, ce_weight=m.ce_weight, terms=m.terms,
                            scheme=SchemeSpec(name=m.scheme, params=m.scheme_params), optim=optim, seed=seed)
            if args.memory and seed == 0:
                peaks.append(_peak_of(m, recipe, trainer, args))
            try:
                fit = trainer.fit(recipe, measure=False)
            except TrainingDiverged:  # reported, and left out of the mean
                diverged += 1
                continue
            accs.append(trainer.test(fit.student))
            epoch_times += [h["epoch_time_s"] for h in fit.history[1:]]
        nan = float("nan")
        results[m.label] = {"acc": accs or [nan], "epoch": statistics.median(epoch_times) if epoch_times else nan,
                            "peak": statistics.median(peaks) if peaks else None, "diverged": diverged}
        note = f", {diverged}/{args.seeds} diverged" if diverged else ""
        acc = results[m.label]["acc"]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0  # the sample std, as in the table
        print(f"  {m.label:28s} test {statistics.mean(acc):.4f} ± {std:.4f} ({time.time() - t0:.0f}s{note})",
              flush=True)
    ce, kd = results["ce_only"], results.get("kd")
    print()
    header = f"{'method':28s} {'test acc (mean ± std)':>22s} {'vs CE-only':>11s} {'vs kd':>8s} {'epoch time':>11s}"
    if args.memory:
        header += f" {'peak mem':>9s} {'(MB)':>7s}"
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        mean, std = statistics.mean(r["acc"]), statistics.stdev(r["acc"]) if len(r["acc"]) > 1 else 0.0
        d_ce = mean - statistics.mean(ce["acc"])
        d_kd = mean - statistics.mean(kd["acc"]) if kd else float("nan")
        line = (f"{label:28s} {mean:>13.4f} ± {std:.4f} {d_ce:>+11.4f} {d_kd:>+8.4f} "
                f"{r['epoch'] / ce['epoch']:>10.2f}x")
        if args.memory:
            ratio = (r["peak"] / ce["peak"]) if (r["peak"] and ce["peak"]) else float("nan")
            line += f" {ratio:>8.2f}x {r['peak'] / 2**20:>7.1f}"
        if r["diverged"]:
            line += f"  ({r['diverged']} of {args.seeds} seeds diverged: mean over the others)"
        print(line)
    print(f"\n{args.seeds} seeds, {args.epochs} epochs; epoch time (and peak memory of one epoch) relative to "
          "CE-only; std is the sample standard deviation over seeds.")
    if args.memory:
        print("peak memory: resident-set growth during one training epoch, each method in a fresh process (CPU), "
              "or the CUDA allocator's peak; it includes the libraries' first-use buffers, common to all methods.")
