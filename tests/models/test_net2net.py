"""Net2Net (Chen et al. ICLR 2016): a wider/deeper student starts computing its teacher's function."""

from __future__ import annotations

import pytest
import torch

from autokd import data, models
from autokd.errors import ConfigError
from autokd.models.net2net import _Grower, net2net, wide_map
from autokd.recipe import OptimSpec, Recipe, StudentSpec
from autokd.train import Trainer, check_recipe, evaluate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trained_like(name: str, shape, **kw):
    """A teacher whose BatchNorm statistics and affine parameters are not the defaults."""
    torch.manual_seed(0)
    t = models.create(name, 10, in_channels=shape[0], **kw)
    with torch.no_grad():
        for m in t.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        t.train()
        for _ in range(3):
            t(torch.randn(32, *shape))
    return t.eval()


CASES = [  # teacher, student, input: wider, deeper, both; plain and residual families
    (("cnn", {"width": 4}), ("cnn", {"width": 8}), (1, 8, 8)),
    (("cnn", {"width": 4}), ("cnn", {"width": 4, "convs": 3}), (1, 8, 8)),
    (("cnn", {"width": 2, "convs": 2}), ("cnn", {"width": 5, "convs": 3}), (3, 8, 8)),
    (("vgg", {"depth": 8, "width": 0.125}), ("vgg", {"depth": 13, "width": 0.25}), (3, 16, 16)),
    (("resnet", {"depth": 8, "width": 4}), ("resnet", {"depth": 8, "width": 8}), (1, 8, 8)),
    (("resnet", {"depth": 8, "width": 4}), ("resnet", {"depth": 20, "width": 4}), (1, 8, 8)),
    (("resnet", {"depth": 8, "width": 4, "stem_width": 8}), ("resnet", {"depth": 14, "width": 6, "stem_width": 12}),
     (3, 8, 8)),
]


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("teacher,student,shape", CASES, ids=lambda v: str(v))
def test_student_computes_the_teachers_function(teacher, student, shape, noise):
    t = _trained_like(teacher[0], shape, **teacher[1])
    s = models.create(student[0], 10, in_channels=shape[0], **student[1])
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(3))
    net2net(s, t, noise=noise, calib=x, generator=torch.Generator().manual_seed(4))
    s.eval()
    with torch.no_grad():
        t_out, s_out = t.forward_outputs(x), s.forward_outputs(x)
    torch.testing.assert_close(s_out.logits, t_out.logits, rtol=1e-4, atol=1e-4)
    # the first units of every stage are the teacher's own (copies come after them)
    for tf, sf in zip(t_out.feats, s_out.feats, strict=True):
        torch.testing.assert_close(sf[:, : tf.shape[1]], tf, rtol=1e-4, atol=1e-4)
    # in train mode too, on the calibration batch (batch statistics; inserted BNs undo exactly those)
    s.train()
    t.train()
    with torch.no_grad():
        torch.testing.assert_close(s(x), t(x), rtol=1e-3, atol=1e-3)


def test_noise_breaks_the_symmetry_of_the_copies():
    t = _trained_like("cnn", (1, 8, 8), width=2)
    s0 = net2net(models.create("cnn", 10, 1, width=4), t, noise=0.0, generator=torch.Generator().manual_seed(0))
    s1 = net2net(models.create("cnn", 10, 1, width=4), t, noise=0.1, generator=torch.Generator().manual_seed(0))
    w0, w1 = s0.blocks[1][0].weight, s1.blocks[1][0].weight  # the consumer of block 0's 4 (= 2 + 2 copies) units
    g = wide_map(2, 4, torch.Generator().manual_seed(0))
    for u in range(2):
        cols = (g == u).nonzero().flatten()
        if len(cols) > 1:
            assert torch.allclose(w0[:, cols[0]], w0[:, cols[1]])  # plain division: equal outgoing weights
            assert not torch.allclose(w1[:, cols[0]], w1[:, cols[1]])  # noise: different ...
            torch.testing.assert_close(w1[:, cols].sum(1), w0[:, cols].sum(1))  # ... with the same sum


def test_wider_by_hand():
    """g = [0, 1, 0]: unit 0 has 2 copies, unit 1 one; the consumer's columns are divided by those counts."""
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = _Grower(0.0, None)._consume(w, torch.tensor([0, 1, 0]))
    assert torch.equal(out, torch.tensor([[0.5, 2.0, 0.5], [1.5, 4.0, 1.5]]))
    g = wide_map(3, 7, torch.Generator().manual_seed(0))
    assert g[:3].tolist() == [0, 1, 2] and len(g) == 7 and int(g.max()) < 3 and int(g.min()) >= 0


def test_inserted_layer_is_the_identity_in_eval_mode_without_calibration():
    t = _trained_like("cnn", (1, 8, 8), width=3)
    s = net2net(models.create("cnn", 10, 1, width=3, convs=2), t, noise=0.0)
    conv, bn = s.blocks[0][3], s.blocks[0][4]
    assert torch.equal(conv.weight[:, :, 1, 1], torch.eye(3)) and conv.weight.abs().sum() == 3
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(s.eval()(x), t(x), rtol=1e-5, atol=1e-5)
    assert bn.weight.tolist() == [1.0, 1.0, 1.0] and torch.allclose(bn.running_var + bn.eps, torch.ones(3))


@pytest.mark.parametrize(
    "teacher,student,match",
    [
        (("cnn", {"width": 4}), ("mobilenetv2", {}), "works for the families cnn, vgg, resnet"),
        (("resnet", {"depth": 8}), ("cnn", {"width": 8}), "teacher of the student's family"),
        (("cnn", {"width": 4}), ("cnn", {"width": 8, "depth": 4}), "keep the teacher's depth"),
        (("cnn", {"width": 8}), ("cnn", {"width": 4}), "fewer than the teacher's"),
        (("cnn", {"width": 4, "convs": 2}), ("cnn", {"width": 4}), "fewer than the teacher's 2"),
        (("resnet", {"depth": 14}), ("resnet", {"depth": 8}), "blocks, fewer than"),
        (("resnet", {"depth": 8, "width": 4}), ("resnet", {"depth": 8, "width": 8, "stem_width": 4}),
         "projection shortcut"),
    ],
)
def test_impossible_cases_give_one_line(teacher, student, match):
    t = models.create(teacher[0], 10, 1, **teacher[1])
    s = models.create(student[0], 10, 1, **student[1])
    with pytest.raises(ConfigError, match=match) as e:
        net2net(s, t)
    assert "\n" not in str(e.value)


def test_recipe_field_checked_and_defaults_filled():
    r = check_recipe(Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}, init="net2net")))
    assert r.student.init.name == "net2net" and r.student.init.params == {"noise": 0.01}
    for spec, match in [
        ({"name": "mobilenetv2", "init": "net2net"}, "works for the model families cnn, vgg, resnet"),
        ({"name": "cnn", "init": "net2nett"}, "did you mean 'net2net'"),
        ({"name": "cnn", "init": {"name": "net2net", "params": {"noise": -1}}}, "noise must be >= 0"),
        ({"name": "cnn", "init": {"name": "net2net", "params": {"nois": 0.1}}}, "no hyper-parameter 'nois'"),
    ]:
        with pytest.raises(ConfigError, match=match) as e:
            check_recipe(Recipe.from_dict({"student": spec}, source="r.yaml"), source="r.yaml")
        assert str(e.value).startswith("r.yaml: ") and "\n" not in str(e.value)


def test_the_trainer_applies_it_once_where_it_builds_the_student():
    """A digits student grown from a teacher starts at the teacher's accuracy (after one epoch at a negligible
    learning rate); without a teacher the recipe is refused."""
    bundle = data.create("digits", seed=0, val_fraction=0.2, test_fraction=0.3, train_fraction=0.5)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    teacher = Trainer(bundle, device="cpu").fit(
        Recipe(student=StudentSpec(name="cnn", kwargs={"width": 4}), optim=OptimSpec(epochs=5, batch_size=64)),
        measure=False).student.eval()
    t_acc = evaluate(teacher, bundle.loader("val", 512), cpu)
    grown = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8, "convs": 2}, init="net2net"),
                   optim=OptimSpec(epochs=1, lr=1e-9, batch_size=64))
    fit = Trainer(bundle, teacher=teacher, device="cpu").fit(grown, measure=False)
    random = Trainer(bundle, teacher=teacher, device="cpu").fit(
        grown.model_copy(update={"student": StudentSpec(name="cnn", kwargs={"width": 8, "convs": 2})}), measure=False)
    assert t_acc > 0.5
    assert abs(fit.metrics["val_acc"] - t_acc) <= 0.03 < t_acc - random.metrics["val_acc"]
    with pytest.raises(ConfigError, match="there is no teacher"):
        Trainer(bundle, device="cpu").fit(grown, measure=False)
