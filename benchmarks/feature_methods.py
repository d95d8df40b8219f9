"""Every feature- and relation-level method on digits: a fixed CNN teacher, a student from another family.

Prints method, test accuracy mean ± std, gain over CE-only and over plain KD, epoch time and peak memory of
one training epoch relative to CE-only::

    python benchmarks/feature_methods.py --seeds 3 --epochs 15 --memory

Each method runs as CRD's benchmark does (CE weight 1 + the method's documented weight, no KD term), with
its default layer pairs; pre-training stages (FT's paraphraser, FreeKD's prompts) are included in the fit.
"""

from __future__ import annotations

from _common import Method, parser, run, setup

from autokd import losses
from autokd.recipe import StudentSpec, TermSpec

FEATURE_METHODS = ["fitnet", "at", "nst", "fsp", "pkt", "ft", "ab", "vid", "cc", "ofd", "sp", "rkd", "irg", "crd",
                   "semckd", "review_kd", "ickd", "srrl", "simkd", "cat_kd", "tat", "freekd", "jacobian"]


def methods() -> list[Method]:
    out = [Method("ce_only"), Method("kd", [TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                                     ce_weight=0.1)]
    for name in FEATURE_METHODS:
        w = float(getattr(losses.get(name), "default_weight", 1.0))
        params = {"pretrain_epochs": 1} if name in ("ft", "freekd") else {}
        out.append(Method(name, [TermSpec(loss=name, weight=w, params=params)], ce_weight=1.0))
    return out


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--student", default="resnet", help="student family (default: resnet depth 8 width 8)")
    args = ap.parse_args()
    trainer = setup(args, teacher="cnn", teacher_kwargs={"width": 32})
    student = (StudentSpec(name="resnet", kwargs={"depth": 8, "width": 8}) if args.student == "resnet"
               else StudentSpec(name=args.student))
    if not args.measure_one:
        print(f"student {student.label()} (teacher: cnn width 32)")
    run(trainer, methods(), student, args)


if __name__ == "__main__":
    main()
