"""Vision-transformer distillation on digits: a tiny ViT student trained with CE only, KD, DeiT (hard/soft),
CiT and TinyMIM; test accuracy over seeds, gains over CE-only and KD, epoch time relative to CE-only.

    python benchmarks/vit_methods.py --seeds 3 --epochs 25 --train-fraction 0.5

Student: ``vit`` patch 2, 4 blocks, width 32, 2 heads (8×8 inputs -> 16 patches), AdamW (lr 2e-3, wd 0.05,
2 warm-up epochs, cosine), batch 32, on a fraction of the training split (ViTs need more images than the
CNNs of the other benchmarks). Teachers, trained once on the full training split and cached: a CNN
(``cnn`` width 32, SGD) for KD, DeiT and CiT (the DeiT paper: a convnet is the better teacher), an
involution net (``rednet_w16``, CiT's second teacher, trained by the trainer's helper-teacher cache) and a
ViT (``vit_s8``: 6 blocks, width 64, 4 heads, AdamW) for TinyMIM, which distils attention relations and so
needs a transformer teacher; KD from that ViT teacher is listed for a like-for-like comparison.

Weights: KD 0.1·CE + 0.9·KD (T = 4); DeiT hard ½·CE + ½·CE(dist, argmax t) (paper); DeiT soft ½·CE + ½·soft
with τ = 3 (official code's α = 0.5; the paper's soft run uses λ = 0.1, which the official N·K reduction
makes negligible on 10 classes); CiT CE + KL_conv + KL_inv at τ = 1 (official code) with the paper's
conv + involution token stem, plus the same loss on a plain patch stem and the conv + involution-stem student
trained with CE only, to separate the stem's inductive bias from the distillation; TinyMIM CE + relation KL
(block choice of the paper). Runs with one torch thread (a shared machine).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import parser

from autokd import data as datasets
from autokd.config import TeacherSpec
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer, make_teacher_source, obtain_teacher

STUDENT = {"patch_size": 2, "depth": 4, "width": 32, "heads": 2, "img_size": 8}
VIT_TEACHER = StudentSpec(name="vit_s8")


@dataclass
class Method:
    label: str
    terms: list[TermSpec] = field(default_factory=list)
    ce_weight: float = 1.0
    student: dict = field(default_factory=dict)
    teacher: str = "cnn"


def T(loss: str, weight: float, **params) -> TermSpec:
    return TermSpec(loss=loss, weight=weight, params=params)


METHODS = [
    Method("ce_only"),
    Method("kd", [T("kd", 0.9, temperature=4.0)], ce_weight=0.1),
    Method("deit_hard", [T("deit", 0.5, variant="hard")], ce_weight=0.5, student={"distill_tokens": 1}),
    Method("deit_soft", [T("deit", 0.5, variant="soft", temperature=3.0)], ce_weight=0.5,
           student={"distill_tokens": 1}),
    Method("cit", [T("cit", 1.0)], student={"distill_tokens": 2, "stem": "conv_inv"}),
    Method("cit (patch stem)", [T("cit", 1.0)], student={"distill_tokens": 2}),
    Method("ce_only (conv_inv stem)", student={"distill_tokens": 2, "stem": "conv_inv"}),
    Method("kd (ViT teacher)", [T("kd", 0.9, temperature=4.0)], ce_weight=0.1, teacher="vit"),
    Method("tinymim (ViT teacher)", [T("tinymim", 1.0)], teacher="vit"),
]


def vit_teacher(full, cache: Path, epochs: int) -> torch.nn.Module:
    """``vit_s8`` trained once with CE and AdamW on the full training split (cached by epochs)."""
    from autokd import models

    path = cache / f"teacher-vit_s8-{epochs}.pt"
    model = models.from_spec(VIT_TEACHER, full.num_classes, full.input_shape[0])
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        optim = OptimSpec(name="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=2, epochs=epochs, batch_size=32)
        model = Trainer(full, device="cpu").fit(Recipe(student=VIT_TEACHER, optim=optim), measure=False).student
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval().requires_grad_(False)


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.set_defaults(epochs=25, train_fraction=0.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = datasets.create("digits", seed=0, val_fraction=0.2, test_fraction=0.3, train_fraction=args.train_fraction)
    full = datasets.create("digits", seed=0, val_fraction=0.2, test_fraction=0.3, train_fraction=1.0)
    cache = Path(args.cache)
    dev = torch.device("cpu")
    cnn, info = obtain_teacher(TeacherSpec(name="cnn", kwargs={"width": 32}, epochs=30), full, cache / "teacher-cnn",
                               dev, log=lambda *a: None)
    vit = vit_teacher(full, cache, 30)
    trainers = {}
    for key, model in (("cnn", cnn), ("vit", vit)):
        source = make_teacher_source("auto", model, bundle, dev, cache_dir=None)
        trainers[key] = Trainer(bundle, teacher=model, teacher_source=source, device=dev, cache_dir=cache / "helpers",
                                teacher_data=full)
    print(f"teachers: cnn(width=32) test {info.get('test_acc', float('nan')):.4f}, "
          f"vit_s8 test {trainers['vit'].test(vit):.4f}; student training set {len(bundle.train)} images")
    inv = trainers["cnn"].helper_teacher("rednet_w16", {}, args.epochs)
    print(f"involution teacher rednet_w16 ({args.epochs} epochs): test {trainers['cnn'].test(inv):.4f}")
    optim = OptimSpec(name="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=2, epochs=args.epochs, batch_size=32)
    results = {}
    for m in METHODS:
        if args.only and m.label not in args.only and m.label not in ("ce_only", "kd"):
            continue
        accs, times = [], []
        t0 = time.time()
        for seed in range(args.seeds):
            recipe = Recipe(student=StudentSpec(name="vit", kwargs={**STUDENT, **m.student}), ce_weight=m.ce_weight,
                            terms=m.terms, optim=optim, seed=seed)
            trainer = trainers[m.teacher]
            fit = trainer.fit(recipe, measure=False)
            accs.append(trainer.test(fit.student))
            times += [h["epoch_time_s"] for h in fit.history[1:]]
        results[m.label] = (accs, statistics.median(times))
        print(f"  {m.label:26s} test {statistics.mean(accs):.4f} ± {statistics.stdev(accs) if len(accs) > 1 else 0:.4f}"
              f" ({time.time() - t0:.0f}s)", flush=True)
    ce, kd = results["ce_only"], results["kd"]
    print()
    header = f"{'method':26s} {'test acc (mean ± std)':>22s} {'vs CE-only':>11s} {'vs kd':>8s} {'epoch time':>11s}"
    print(header)
    print("-" * len(header))
    for label, (accs, epoch) in results.items():
        mean, std = statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{label:26s} {mean:>13.4f} ± {std:.4f} {mean - statistics.mean(ce[0]):>+11.4f} "
              f"{mean - statistics.mean(kd[0]):>+8.4f} {epoch / ce[1]:>10.2f}x")
    print(f"\n{args.seeds} seeds, {args.epochs} epochs, {len(bundle.train)} training images; epoch time relative to "
          "CE-only (median over epochs 2..); std is the sample standard deviation over seeds.")


if __name__ == "__main__":
    main()
