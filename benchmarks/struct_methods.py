"""Structure-level methods: gain and cost of Net2Net, Moonshine, Quantization Mimic and embedding encoding.

Each section fixes a teacher (trained once on the full training split, stored in ``--cache``) and a student,
trains every variant with the same data (25% of the training split), optimiser, epochs and seeds, and prints
test accuracy (mean ± std over seeds), the gain over the section's CE-only student, the epoch time relative to
it, and the student's parameters and FLOPs per sample::

    python benchmarks/struct_methods.py --seeds 3 --epochs 15

- net2net (digits): cnn(width 8, convs 2) grown from a cnn(width 4) teacher vs the same student from random
  initialisation, with CE only and with KD (Chen et al. 2016 start the bigger net from the smaller one);
- moonshine (digits): WRN-16-2 teacher; the WRN-16-2 with G(4)B(2) blocks as student, CE vs attention transfer
  (β = 1000, Crowley et al. 2018's recipe for 32×32 inputs; 62.5, ``at``'s resolution-scaled default for these
  8×8 maps; 10) vs KD;
- quantization (digits): cnn(width 32) teacher; a 4-bit cnn(width 4) student, CE vs KD vs Quantization Mimic
  (Wei et al. 2018) at two weights vs a float FitNets hint on the same map, and the float student;
- text (fake_text): textcnn teacher with a 64-dim embedding; 8-dim students, CE vs KD vs embedding encoding
  (Mou et al. 2016) with and without its matching-softmax term.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from autokd import data as datasets
from autokd import models
from autokd.config import TeacherSpec
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer, make_teacher_source, measure_model, obtain_teacher

Row = tuple[str, StudentSpec, float, list[TermSpec]]  # label, student, CE weight, terms


def _kd(weight: float = 0.9) -> TermSpec:
    return TermSpec(loss="kd", weight=weight, params={"temperature": 4.0})


def sections() -> dict[str, dict]:
    cnn8 = StudentSpec(name="cnn", kwargs={"width": 8, "convs": 2})
    grown = StudentSpec(name="cnn", kwargs={"width": 8, "convs": 2}, init="net2net")
    moon = StudentSpec(name="moonshine_16_2_g4b2")
    q4 = StudentSpec(name="cnn", kwargs={"width": 4}, quantize={"bits": 4})
    e8 = StudentSpec(name="textcnn", kwargs={"embed_dim": 8, "channels": 16})
    return {
        "net2net": {"data": "digits", "teacher": ("cnn", {"width": 4}), "rows": [
            ("ce_only (random init)", cnn8, 1.0, []),
            ("net2net init, CE", grown, 1.0, []),
            ("kd (random init)", cnn8, 0.1, [_kd()]),
            ("net2net init + kd", grown, 0.1, [_kd()]),
        ]},
        "moonshine": {"data": "digits", "teacher": ("wrn_16_2", {}), "rows": [
            ("ce_only", moon, 1.0, []),
            ("at (beta 1000, official)", moon, 1.0, [TermSpec(loss="at", weight=1000.0)]),
            ("at (beta 62.5: at's default for 8x8 maps)", moon, 1.0, [TermSpec(loss="at", weight=62.5)]),
            ("at (beta 10)", moon, 1.0, [TermSpec(loss="at", weight=10.0)]),
            ("kd", moon, 0.1, [_kd()]),
        ]},
        "quantization": {"data": "digits", "teacher": ("cnn", {"width": 32}), "rows": [
            ("ce_only (4-bit)", q4, 1.0, []),
            ("kd (4-bit)", q4, 0.1, [_kd()]),
            ("quantization_mimic (4-bit)", q4, 1.0, [TermSpec(loss="quantization_mimic", weight=0.05)]),
            ("quantization_mimic w 0.002 (4-bit)", q4, 1.0, [TermSpec(loss="quantization_mimic", weight=0.002)]),
            ("fitnet on the last map (4-bit)", q4, 1.0, [TermSpec(loss="fitnet", weight=100.0, pairs=[(2, 2)])]),
            ("float student, CE", StudentSpec(name="cnn", kwargs={"width": 4}), 1.0, []),
        ]},
        "text": {"data": "fake_text", "teacher": ("textcnn", {"embed_dim": 64, "channels": 64}), "rows": [
            ("ce_only", e8, 1.0, []),
            ("kd", e8, 0.1, [_kd()]),
            ("embedding_encoding (+ matching softmax)", e8, 0.1, [TermSpec(loss="embedding_encoding", weight=0.9)]),
            ("embedding_encoding alone (weight 0)", e8, 1.0, [TermSpec(loss="embedding_encoding", weight=0.0)]),
        ]},
    }


def _bundles(name: str, fraction: float):
    kw = {"val_fraction": 0.2, "test_fraction": 0.3} if name == "digits" else {}
    return (datasets.create(name, seed=0, train_fraction=fraction, **kw),
            datasets.create(name, seed=0, train_fraction=1.0, **kw))


def run_section(name: str, sec: dict, args) -> None:
    bundle, full = _bundles(sec["data"], args.train_fraction)
    t_name, t_kw = sec["teacher"]
    dev = torch.device("cpu")
    spec = TeacherSpec(name=t_name, kwargs=t_kw, epochs=30)
    teacher, info = obtain_teacher(spec, full, Path(args.cache) / f"teacher-{sec['data']}-{t_name}", dev,
                                   log=lambda *a: None)
    t_cost = measure_model(teacher, bundle.input_shape)
    trainer = Trainer(bundle, teacher=teacher, teacher_source=make_teacher_source("auto", teacher, bundle, dev),
                      device=dev)
    print(f"\n== {name}: {sec['data']}, teacher {t_name}{t_kw or ''} test acc {info.get('test_acc', float('nan')):.4f}"
          f" ({t_cost['params']:,} params, {t_cost['flops']:,} FLOPs); students on {len(bundle.train)} samples")
    results = {}
    for label, student, ce, terms in sec["rows"]:
        accs, epoch_times, t0 = [], [], time.time()
        for seed in range(args.seeds):
            recipe = Recipe(student=student, ce_weight=ce, terms=terms, seed=seed,
                            optim=OptimSpec(lr=0.05, epochs=args.epochs, batch_size=32))
            fit = trainer.fit(recipe, measure=seed == 0)
            if seed == 0:
                cost = {k: fit.metrics[k] for k in ("params", "flops")}
            accs.append(trainer.test(fit.student))
            epoch_times += [h["epoch_time_s"] for h in fit.history[1:]]
        results[label] = (accs, statistics.median(epoch_times), cost)
        print(f"  {label:42s} {statistics.mean(accs):.4f} ({time.time() - t0:.0f}s)", flush=True)
    _prepare_costs(sec, trainer, bundle)
    base_acc, base_time, _ = next(iter(results.values()))
    header = (f"{'method':42s} {'test acc (mean ± std)':>22s} {'vs CE-only':>10s} {'epoch time':>10s} "
              f"{'params':>9s} {'FLOPs':>10s}")
    print(header + "\n" + "-" * len(header))
    for label, (accs, epoch, cost) in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{label:42s} {statistics.mean(accs):>13.4f} ± {std:.4f} "
              f"{statistics.mean(accs) - statistics.mean(base_acc):>+10.4f} {epoch / base_time:>9.2f}x "
              f"{cost['params']:>9,} {cost['flops']:>10,}")


def _prepare_costs(sec: dict, trainer: Trainer, bundle) -> None:
    """One-time cost of ``student.init`` / ``student.quantize`` (median of 5 builds, calibration included)."""
    seen = set()
    calib = next(iter(bundle.loader("train_eval", 256, shuffle=False)))[0]  # what the trainer calibrates on
    for _, student, _, _ in sec["rows"]:
        if not models.needs_calibration(student) or student.label() in seen:
            continue
        seen.add(student.label())
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            m = models.from_spec(student, bundle.num_classes, bundle.input_shape[0])
            models.prepare_student(m, student, teacher=trainer.teacher, calib=calib)
            times.append(time.perf_counter() - t0)
        print(f"  one-time build + prepare of {student.label()}: {1000 * statistics.median(times):.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--train-fraction", type=float, default=0.25)
    ap.add_argument("--only", nargs="*", default=None, help="sections: net2net moonshine quantization text")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "autokd-bench"),
                    help="where the teachers are stored once")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name, sec in sections().items():
        if args.only and name not in args.only:
            continue
        run_section(name, sec, args)
    print(f"\n{args.seeds} seeds, {args.epochs} epochs, lr 0.05, batch 32; epoch time relative to each section's "
          "first row; std is the sample standard deviation over seeds; params/FLOPs of the exported student.")


if __name__ == "__main__":
    main()
