"""Every feature- and relation-level method on digits: a fixed CNN teacher, a student from another family.

Prints method, test accuracy mean ± std, gain over CE-only and over plain KD, epoch time and peak memory of
one training epoch relative to CE-only::

    python benchmarks/feature_methods.py --seeds 3 --epochs 15 --memory
    python benchmarks/feature_methods.py --only bingo kpn darkrank kdsvd cc_crd   # a subset (+ the baselines)

Each method runs as CRD's benchmark does (CE weight 1 + the method's documented weight, no KD term), with
its default layer pairs; pre-training stages (FT's paraphraser, FreeKD's prompts) are included in the fit.
The weight is the method's :meth:`~autokd.losses.DistillLoss.default_weight_for` these models (AT's scales with
the compared map sizes; the others are their reference weights). Labels ``name(param=value)`` run a variant;
``name@weight`` a weight other than the default.
"""

from __future__ import annotations

from _common import Method, parser, run, setup

from autokd import losses, models
from autokd.recipe import StudentSpec, TermSpec

FEATURE_METHODS = ["fitnet", "at", "nst", "fsp", "pkt", "ft", "ab", "vid", "cc", "cc_crd", "ofd", "sp", "rkd",
                   "irg", "crd", "semckd", "review_kd", "ickd", "srrl", "srrl(variant=embedding)", "simkd",
                   "cat_kd", "tat", "freekd", "jacobian", "bingo", "kpn", "darkrank", "darkrank(variant=hard)",
                   "kdsvd", "semckd@100"]


def _parse(label: str) -> tuple[str, dict, float | None]:
    """``name``, ``name(k=v,...)`` or ``name@weight`` -> (loss name, params, weight or None)."""
    weight = None
    if "@" in label:
        label, w = label.split("@")
        weight = float(w)
    params: dict = {}
    if "(" in label:
        label, inner = label[:-1].split("(")
        for kv in inner.split(","):
            k, v = kv.split("=")
            params[k] = v
    return label, params, weight


def methods(student_shapes, teacher_shapes) -> list[Method]:
    out = [Method("ce_only"), Method("kd", [TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                                     ce_weight=0.1)]
    for label in FEATURE_METHODS:
        name, params, weight = _parse(label)
        if weight is None:
            weight = losses.get(name).default_weight_for(student_shapes, teacher_shapes)
        if name in ("ft", "freekd"):
            params["pretrain_epochs"] = 1
        out.append(Method(label, [TermSpec(loss=name, weight=float(weight), params=params)], ce_weight=1.0))
    return out


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--student", default="resnet", help="student family (default: resnet depth 8 width 8)")
    args = ap.parse_args()
    trainer = setup(args, teacher="cnn", teacher_kwargs={"width": 32})
    student = (StudentSpec(name="resnet", kwargs={"depth": 8, "width": 8}) if args.student == "resnet"
               else StudentSpec(name=args.student))
    data = trainer.data
    s_shapes = models.shapes(models.from_spec(student, data.num_classes, data.input_shape[0]), data.input_shape)
    t_shapes = models.shapes(trainer.teacher, data.input_shape)
    todo = methods(s_shapes, t_shapes)
    if not args.measure_one:
        print(f"student {student.label()} (teacher: cnn width 32)")
        for m in todo:
            if m.terms and (not args.only or m.label in args.only):
                print(f"  {m.label}: weight {m.terms[0].weight:.4g}")
    run(trainer, todo, student, args)


if __name__ == "__main__":
    main()
