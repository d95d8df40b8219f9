"""Every registered proxy (parametrised over the registry) on digits-sized zoo students: finite,
deterministic, side-effect free."""

from __future__ import annotations

import copy

import pytest
import torch

from autokd import data, models, proxies
from autokd.errors import ConfigError, UnknownNameError

STUDENTS = ["cnn", "resnet8", "mobilenetv2_x0_25", "shufflenetv2_x0_5", "vit_t8"]  # ViT: LayerNorm, GELU, SDPA


@pytest.fixture(scope="module")
def setting():
    bundle = data.create("digits", seed=0, train_fraction=0.25)
    batch = proxies.proxy_batch(bundle, 64, seed=0)
    torch.manual_seed(0)
    teacher = models.create("cnn", 10, in_channels=1, width=8).eval()
    students = {n: models.create(n, 10, in_channels=1) for n in STUDENTS}
    return batch, teacher, students


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", proxies.names())
def test_proxy_is_finite_deterministic_and_leaves_no_trace(setting, name):
    batch, teacher, students = setting
    proxy = proxies.create(name)
    t_state, t_modes = _state(teacher), [m.training for m in teacher.modules()]
    for arch, student in students.items():
        student.train(arch != "resnet8")  # callers' modes must come back as they were
        before, modes = _state(student), [m.training for m in student.modules()]
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in student.modules())
        rng = torch.get_rng_state()
        score = proxy(student, teacher, batch, seed=0)
        assert isinstance(score, float) and torch.isfinite(torch.tensor(score)), (name, arch, score)
        after = _state(student)
        assert all(torch.equal(before[k], after[k]) for k in before), (name, arch)
        assert [m.training for m in student.modules()] == modes
        assert all(p.grad is None for p in student.parameters())
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in student.modules()) == hooks
        assert torch.equal(torch.get_rng_state(), rng)
        if arch == "cnn":
            assert proxy(student, teacher, batch, seed=0) == score  # same seed, same score
    assert all(torch.equal(t_state[k], v) for k, v in teacher.state_dict().items())
    assert [m.training for m in teacher.modules()] == t_modes


def test_registry_metadata_and_errors():
    assert {"diswot", "diswot_semantic", "diswot_relation", "naswot", "synflow", "snip", "grasp", "grad_norm",
            "fisher", "jacob_cov", "zen", "params", "flops", "kd_ridge"} <= set(proxies.names())
    for name in proxies.names():
        meta = proxies.PROXIES.meta(name)
        assert meta["bn_mode"] in ("train", "eval", "removed", "n/a") and meta["paper"]
        assert proxies.needs_teacher(name) == name.startswith(("diswot", "kd_"))
    with pytest.raises(UnknownNameError, match="naswot"):
        proxies.create("naswto")
    with pytest.raises(ConfigError, match="no option"):
        proxies.create("kd_ridge", nonsense=1)
    assert proxies.create("kd_ridge", temperature=2.0).temperature == 2.0


def test_teacher_free_proxies_ignore_the_teacher(setting):
    batch, teacher, students = setting
    for name in ("naswot", "snip", "synflow"):
        p = proxies.create(name)
        assert p(students["cnn"], None, batch) == p(students["cnn"], teacher, batch)


def test_a_different_seed_changes_random_proxies_only(setting):
    batch, teacher, students = setting
    s = students["resnet8"]
    assert proxies.create("zen")(s, None, batch, seed=0) != proxies.create("zen")(s, None, batch, seed=1)
    naswot = proxies.create("naswot")
    assert naswot(s, None, batch, seed=0) == naswot(s, None, batch, seed=1)


def test_student_copy_is_not_shared(setting):
    batch, teacher, students = setting
    s = copy.deepcopy(students["cnn"]).train()
    bn = next(m for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d))
    proxies.create("naswot")(s, None, batch)  # a train-mode forward on the copy only
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert int(bn.num_batches_tracked) == 0
