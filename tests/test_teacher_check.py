"""The nasty-teacher option and ``autokd teacher check``: formulas by hand, then a nasty teacher on digits."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from typer.testing import CliRunner

from autokd import data, schemes
from autokd.config import StudyConfig, TeacherSpec
from autokd.context import StudyContext
from autokd.distiller import Step
from autokd.errors import UnknownNameError
from autokd.fingerprint import config_hash
from autokd.outputs import Outputs
from autokd.recipe import OptimSpec, Recipe, StudentSpec
from autokd.schemes.nasty import nasty_kl
from autokd.teacher_check import (
    PairedDifference,
    check_teacher,
    paired_difference,
    softened_diagnostics,
    verdict_of,
)
from autokd.train import obtain_teacher

ROOT = Path(__file__).resolve().parents[1]


# -- the nasty loss ---------------------------------------------------------------------------------------
def test_nasty_kl_has_the_nasty_model_as_target_like_the_official_code():
    g = torch.Generator().manual_seed(0)
    f, adv = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    tau = 4.0
    p, q = F.softmax(f / tau, 1), F.softmax(adv / tau, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean() * tau * tau
    official = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(adv / tau, 1), F.softmax(f / tau, 1)) * tau * tau
    assert torch.allclose(nasty_kl(f, adv, tau), by_hand, atol=1e-5)
    assert torch.allclose(nasty_kl(f, adv, tau), official, atol=1e-5)
    # the scheme subtracts ω × that KL, computed against the (frozen) adversarial network
    adversarial = nn.Linear(3, 5)
    scheme = schemes.create("nasty", omega=0.04, temperature=tau)
    scheme.setup(teacher=adversarial)
    x = torch.randn(6, 3)
    out = scheme.extra_losses(x, torch.zeros(6, dtype=torch.long), torch.arange(6), Step({}, Outputs(logits=f)))
    assert torch.allclose(out["nasty"], -0.04 * nasty_kl(f, adversarial(x).detach(), tau), atol=1e-6)


def test_nasty_option_is_validated_and_keyed_in_the_teacher_hash(tmp_path):
    with pytest.raises(ValidationError, match="cannot be combined with teacher.checkpoint"):
        TeacherSpec(name="cnn", checkpoint="t.pt", nasty={})
    with pytest.raises(UnknownNameError, match="teacher.nasty.adversarial.name: unknown model 'cnnn'"):
        TeacherSpec(name="cnn", nasty={"adversarial": {"name": "cnnn"}})
    bundle = data.create("digits", train_fraction=0.1)
    plain = TeacherSpec(name="cnn", kwargs={"width": 4}, epochs=1)
    _, info = obtain_teacher(plain, bundle, tmp_path / "plain", torch.device("cpu"), log=lambda *a: None)
    identity = {k: v for k, v in plain.model_dump(mode="json").items() if k != "nasty"}
    assert info["hash"] == config_hash({"teacher": identity, "data": bundle.info, "v": 1})  # unchanged hashes
    nasty = plain.model_copy(update={"nasty": TeacherSpec.model_validate(
        {"name": "cnn", "nasty": {"omega": 0.1, "adversarial": {"epochs": 1}}}).nasty})
    _, ninfo = obtain_teacher(nasty, bundle, tmp_path / "nasty", torch.device("cpu"), log=lambda *a: None)
    assert ninfo["hash"] != info["hash"]
    assert ninfo["nasty"]["omega"] == 0.1 and ninfo["nasty"]["adversarial"]["name"] == "cnn"
    blob = torch.load(tmp_path / "nasty" / "teacher.pt", weights_only=True)
    assert blob["config"]["teacher"]["nasty"]["omega"] == 0.1


# -- the statistics of the check ------------------------------------------------------------------------------
def test_paired_difference_is_a_t_interval():
    kd, ce = [0.80, 0.70, 0.90], [0.75, 0.72, 0.80]
    d = [0.05, -0.02, 0.10]
    diff = paired_difference(kd, ce)
    sd = math.sqrt(sum((v - statistics.fmean(d)) ** 2 for v in d) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert diff.mean == pytest.approx(0.13 / 3) and diff.sd == pytest.approx(sd)
    assert (diff.low, diff.high) == pytest.approx((0.13 / 3 - half, 0.13 / 3 + half))
    five = paired_difference([0.1, 0.2, 0.3, 0.4, 0.5], [0.0] * 5)
    assert five.high - five.mean == pytest.approx(2.7764451051977987 * five.sd / math.sqrt(5))  # t_{0.975, 4}
    one = paired_difference([0.5], [0.6])
    assert one.low == -math.inf and one.high == math.inf and verdict_of(one) == "inconclusive"


@pytest.mark.parametrize("low, high, verdict", [(-0.3, -0.01, "undistillable"), (0.01, 0.2, "distillable"),
                                                (-0.2, 0.05, "no clear effect")])
def test_verdict_needs_the_whole_interval_on_one_side(low, high, verdict):
    assert verdict_of(PairedDifference((low + high) / 2, 0.1, 3, low, high)) == verdict


class _Const(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x):
        return self.row.expand(len(x), -1)


def test_softened_diagnostics_by_hand():
    loader = [(torch.zeros(2, 1), torch.tensor([0, 1]), torch.arange(2)),
              (torch.zeros(1, 1), torch.tensor([0]), torch.arange(1))]
    rows = {"t": [4.0, 0.0, 2.0], "r1": [0.0, 4.0, 0.0], "r2": [1.0, 0.0, 3.0]}
    g = softened_diagnostics(_Const(rows["t"]), [_Const(rows["r1"]), _Const(rows["r2"])], loader,
                             torch.device("cpu"), temperature=2.0)
    ys = [0, 1, 0]

    def soft(row, classes):  # softmax of row / T over the given classes only
        e = [math.exp(row[c] / 2.0) for c in classes]
        return {c: v / sum(e) for c, v in zip(classes, e, strict=True)}

    def dark(row, y):  # the distribution over the non-target classes
        return soft(row, [c for c in range(3) if c != y])

    def kl(a, b):
        return sum(a[c] * math.log(a[c] / b[c]) for c in a)

    def mean(v):
        return sum(v) / len(v)

    p = {k: soft(r, [0, 1, 2]) for k, r in rows.items()}
    assert g["teacher_acc"] == pytest.approx(2 / 3)
    assert g["true_class_mass"] == pytest.approx(mean([p["t"][y] for y in ys]), rel=1e-6)
    assert g["peaks"] == sum(v > 1 / 3 for v in p["t"].values()) == 1
    assert g["agreement"] == 0.0  # r1 predicts class 1, r2 class 2, the teacher class 0
    assert g["nontarget_kl"] == pytest.approx(
        mean([mean([kl(dark(rows["t"], y), dark(rows[r], y)) for y in ys]) for r in ("r1", "r2")]), rel=1e-5)
    assert g["reference_nontarget_kl"] == pytest.approx(mean([kl(dark(rows["r1"], y), dark(rows["r2"], y))
                                                              for y in ys]), rel=1e-5)
    # most probable wrong class: teacher 2, 0, 2; r1 1, 0, 1; r2 2, 2, 2
    assert g["dark_agreement"] == pytest.approx(mean([1 / 3, 2 / 3]))
    assert g["reference_dark_agreement"] == pytest.approx(0.0)


# -- a nasty teacher on digits --------------------------------------------------------------------------------
def _context(tmp_path, name, nasty=None):
    teacher = {"name": "cnn", "kwargs": {"width": 16}, "epochs": 8}
    if nasty:
        teacher["nasty"] = nasty
    cfg = StudyConfig.model_validate({
        "name": name, "device": "cpu", "space": "unused.yaml", "output_dir": str(tmp_path / name),
        "data": {"name": "digits", "train_fraction": 0.25, "val_fraction": 0.2, "test_fraction": 0.3},
        "teacher": teacher})
    return StudyContext.open(cfg, log=lambda *a: None)


def test_a_nasty_teacher_is_found_undistillable_and_a_normal_one_is_not(tmp_path):
    # 20 epochs and 4 seeds: with fewer, KD from the normal teacher is itself borderline and the nasty
    # teacher's interval sits too close to 0 for the verdict to hold across thread counts
    student = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 4}), optim=OptimSpec(lr=0.1, epochs=20))
    quiet = {"seeds": 4, "log": lambda *a: None}
    nasty = check_teacher(_context(tmp_path, "nasty", {"omega": 0.3, "temperature": 4.0}), student, **quiet)
    normal = check_teacher(_context(tmp_path, "normal"), student, **quiet)
    assert nasty.ce_only == normal.ce_only  # the same CE-only students: the pairs differ only by the teacher
    assert nasty.verdict == "undistillable" and nasty.difference.high < 0
    assert nasty.difference == paired_difference(nasty.kd, nasty.ce_only)
    assert normal.verdict != "undistillable" and normal.difference.mean > nasty.difference.mean + 0.1
    # why: the nasty teacher is still accurate, but its dark knowledge is far from a normal model's
    g, h = nasty.diagnostics, normal.diagnostics
    assert g["teacher_acc"] > 0.75
    assert g["nontarget_kl"] > 2 * g["reference_nontarget_kl"] and g["nontarget_kl"] > 2 * h["nontarget_kl"]
    assert g["dark_agreement"] < h["dark_agreement"] and g["peaks"] > h["peaks"]
    assert nasty.reasons() and not normal.reasons()
    text = " ".join(nasty.explanation())
    assert text.startswith("undistillable: KD from this teacher underperforms CE-only") and "why: its dark" in text


def test_teacher_check_cli_writes_its_verdict(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("\n".join([
        "name: s", "device: cpu", "data: {name: digits, train_fraction: 0.2}",
        "teacher: {name: cnn, kwargs: {width: 4}, epochs: 1}",
        f"space: {ROOT / 'search_spaces' / 'digits.yaml'}", "search: {epochs: 1}"]))
    res = CliRunner().invoke(__import__("autokd.cli", fromlist=["app"]).app,
                             ["teacher", "check", str(study), "--seeds", "1"])
    assert res.exit_code == 0, res.output
    assert "inconclusive: one seed gives no noise estimate" in res.output
    saved = json.loads((tmp_path / "s" / "teacher_check.json").read_text())
    assert saved["verdict"] == "inconclusive" and saved["epochs"] == 1 and len(saved["val_acc"]["kd"]) == 1
