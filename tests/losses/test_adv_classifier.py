"""SRRL, SimKD (and its inference student) and CAT-KD against explicit re-computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import losses, models
from autokd.distiller import Distiller
from autokd.errors import ConfigError
from autokd.losses.classifier import SimKDStudent, class_activation_maps
from autokd.recipe import Recipe, StudentSpec, TermSpec

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _models(student="cnn", teacher_width=8, **skw):
    torch.manual_seed(0)
    t = models.create("cnn", num_classes=10, in_channels=1, width=teacher_width).eval().requires_grad_(False)
    s = models.create(student, num_classes=10, in_channels=1, **skw)
    return t, s


def _build(name, t, s, **hp):
    loss = losses.create(name, student=models.shapes(s, SHAPE), teacher=models.shapes(t, SHAPE), **hp)
    loss.setup(teacher_model=t, student_model=s, num_samples=8)
    return loss


# -------------------------------------------------------------------------------------------------- SRRL
def _bn_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """BatchNorm2d in training mode: per-channel mean and biased variance over (N, H, W)."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma[None, :, None, None] + beta[None, :, None, None]


def test_srrl_authors_formula_on_the_feature_map_by_hand():
    t, s = _models(width=2)  # student last map 8×2×2, teacher 32×2×2
    t.requires_grad_(True)  # the loss must not push gradients into the teacher's classifier either way
    loss = _build("srrl", t, s, alpha=0.5, beta=2.0)
    assert loss.variant == "map"
    with torch.no_grad():  # a non-trivial BN affine, so that the hand computation checks it too
        loss.connector[1].weight.uniform_(0.5, 1.5)
        loss.connector[1].bias.uniform_(-0.2, 0.2)
    x = torch.randn(6, *SHAPE)
    so, to = s.forward_outputs(x), t.forward_outputs(x)
    value = loss(so, to, None)
    with torch.no_grad():
        f_s = so.feats[-1].double().numpy()
        w = loss.connector[0].weight[:, :, 0, 0].double().numpy()
        bn = loss.connector[1]
        conn = np.maximum(
            _bn_train(np.einsum("oc,nchw->nohw", w, f_s), bn.weight.double().numpy(), bn.bias.double().numpy()), 0
        )
        pooled = conn.mean(axis=(2, 3))  # the spatial means: statm_loss, then the teacher's avgpool + fc
        t_pooled = to.feats[-1].double().numpy().mean(axis=(2, 3))
        w_t, b_t = t.classifier.weight.double().numpy(), t.classifier.bias.double().numpy()
        z_t = to.logits.double().numpy()
    expected = 0.5 * ((pooled - t_pooled) ** 2).mean() + 2.0 * ((pooled @ w_t.T + b_t - z_t) ** 2).mean()
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert all(p.grad is None for p in t.parameters())
    assert loss.classifier_t is not t.classifier and not loss.classifier_t.weight.requires_grad
    assert loss.connector[0].weight.grad.abs().sum() > 0


def test_srrl_embedding_variant_connects_the_pooled_vector_and_differs_from_the_map_variant():
    t, s = _models(width=2)
    emb = _build("srrl", t, s, alpha=0.5, beta=2.0, variant="embedding")
    x = torch.randn(6, *SHAPE)
    so, to = s.forward_outputs(x), t.forward_outputs(x)
    value = emb(so, to, None)
    with torch.no_grad():
        w = emb.connector[0].weight[:, :, 0, 0].double().numpy()  # 1×1 conv on a 1×1 map == bias-free linear
        z = np.maximum(_bn_train((so.embedding.double().numpy() @ w.T)[:, :, None, None], np.ones(w.shape[0]),
                                 np.zeros(w.shape[0]))[:, :, 0, 0], 0)
        w_t, b_t = t.classifier.weight.double().numpy(), t.classifier.bias.double().numpy()
        e_t, z_t = to.embedding.double().numpy(), to.logits.double().numpy()
    expected = 0.5 * ((z - e_t) ** 2).mean() + 2.0 * ((z @ w_t.T + b_t - z_t) ** 2).mean()
    assert value.item() == pytest.approx(expected, rel=1e-5)
    on_map = _build("srrl", t, s, alpha=0.5, beta=2.0)
    on_map.connector.load_state_dict(emb.connector.state_dict())  # same weights: BN/ReLU do not commute with pooling
    assert abs(on_map(so, to, None).item() - value.item()) > 1e-4


# ------------------------------------------------------------------------------------------------- SimKD
def test_simkd_loss_is_mse_of_projected_student_to_pooled_teacher_map():
    t, s = _models(student="mobilenetv2_x0_25")  # student 1×1 last map, teacher 2×2: the teacher is pooled
    loss = _build("simkd", t, s)
    assert loss.hw == (1, 1)
    x = torch.randn(4, *SHAPE)
    so, to = s.forward_outputs(x), t.forward_outputs(x)
    value = loss(so, to, None)
    with torch.no_grad():
        proj = loss.projector(so.feats[-1]).double().numpy()
    target = to.feats[-1].double().numpy().mean(axis=(2, 3), keepdims=True)
    assert value.item() == pytest.approx(((proj - target) ** 2).mean(), rel=1e-5)


def test_simkd_student_head_is_projection_through_the_teacher_classifier_and_reloads():
    t, s = _models(width=2)
    loss = _build("simkd", t, s)
    head = loss.student_head(s)
    assert isinstance(head, SimKDStudent) and head.student is s and head.projector is loss.projector
    head.eval()
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        feat = s.forward_outputs(x).feats[-1]
        pooled = loss.projector(feat).mean(dim=(2, 3)).double().numpy()
        w, b = t.classifier.weight.double().numpy(), t.classifier.bias.double().numpy()
        out = head.forward_outputs(x)
        logits = head(x)
    np.testing.assert_allclose(logits.double().numpy(), pooled @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.embedding.double().numpy(), pooled, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.logits, logits) and out.feats[-1].mean(dim=(2, 3)).allclose(out.embedding)
    assert models.shapes(head, SHAPE).embedding == t.classifier.in_features

    # the exported state dict (student + projector + teacher classifier) reloads into a fresh head
    state = head.state_dict()
    assert any(k.startswith("classifier.") for k in state) and any(k.startswith("projector.") for k in state)
    _, s2 = _models(width=2)
    torch.manual_seed(123)
    fresh = _build("simkd", models.create("cnn", num_classes=10, in_channels=1, width=8), s2).student_head(s2)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), logits)


def test_distiller_evaluates_the_simkd_student_and_needs_the_teacher_classifier():
    t, _ = _models()
    recipe = Recipe(
        student=StudentSpec(name="cnn", kwargs={"width": 2}),
        ce_weight=0.0,
        terms=[TermSpec(loss="simkd"), TermSpec(loss="kd")],
    )
    student = models.from_spec(recipe.student, 10, 1)
    dist = Distiller(t, student, recipe, input_shape=SHAPE)
    head = dist.inference_model()
    assert isinstance(head, SimKDStudent) and head.student is student
    assert not any(p.requires_grad for p in head.classifier.parameters())
    assert {id(p) for p in head.projector.parameters()} <= {id(p) for p in dist.trainable_parameters()}
    bare = losses.create("simkd", student=models.shapes(student, SHAPE), teacher=models.shapes(t, SHAPE))
    with pytest.raises(ConfigError, match="teacher"):
        bare.student_head(student)


# ------------------------------------------------------------------------------------------------ CAT-KD
def test_cams_are_the_classifier_weights_as_a_1x1_conv():
    f, w = torch.randn(2, 5, 3, 4), torch.randn(7, 5)
    torch.testing.assert_close(class_activation_maps(f, w), torch.einsum("kc,nchw->nkhw", w, f))


@pytest.mark.parametrize("normalize", [True, False])
def test_cat_kd_pooled_normalised_cams_by_hand(normalize):
    t, s = _models(width=4)  # both last maps 2×2 on 8×8 inputs
    loss = _build("cat_kd", t, s, pool_size=1 if not normalize else 2, normalize=normalize)
    x = torch.randn(3, *SHAPE)
    so, to = s.forward_outputs(x), t.forward_outputs(x)
    value = loss(so, to, None)

    def cams(feat, w, size):
        c = np.einsum("kc,nchw->nkhw", w.detach().double().numpy(), feat.detach().double().numpy())
        c = c.reshape(*c.shape[:2], size, c.shape[2] // size, size, c.shape[3] // size).mean(axis=(3, 5))
        if normalize:
            c = c / np.sqrt((c**2).sum(axis=(2, 3), keepdims=True))
        return c

    size = loss.pool_size
    expected = (
        cams(so.feats[-1], s.classifier.weight, size) - cams(to.feats[-1], t.classifier.weight, size)
    ) ** 2
    assert value.item() == pytest.approx(expected.mean(), rel=1e-5)
    value.backward()
    assert s.classifier.weight.grad.abs().sum() > 0  # the student's own classifier learns from the CAMs
    assert all(p.grad is None for p in t.parameters())


def test_cat_kd_rejects_a_stage_the_classifier_cannot_read():
    t, s = _models(width=4)
    loss = losses.create(
        "cat_kd", student=models.shapes(s, SHAPE), teacher=models.shapes(t, SHAPE), pairs=[(1, 2)]
    )
    with pytest.raises(ConfigError, match="last stages"):
        loss.setup(teacher_model=t, student_model=s)
