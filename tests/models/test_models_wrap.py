"""Tests of foreign-model wrapping: ``module:callable`` factories, ``tv/*`` and :class:`FeatureWrapper`."""

from __future__ import annotations

import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from autokd import models
from autokd.errors import ConfigError, UnknownNameError
from autokd.models import FeatureWrapper, ZooModel, discover_stages

MOD = "_autokd_test_user_models"

SOURCE = textwrap.dedent(
    """
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self, num_classes, in_channels=3, width=4):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu1 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            x = self.pool(self.relu1(self.bn1(self.conv1(x))))
            x = self.relu2(self.conv2(x))
            return self.fc(self.gap(x).flatten(1))


    def make_tiny(num_classes, in_channels=3, width=4):
        return Tiny(num_classes, in_channels, width)


    def make_seq(num_classes):
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)
        )


    def make_zoo(num_classes, in_channels=3):
        from autokd.models import create

        return create("cnn_w2", num_classes, in_channels)


    def not_a_model(num_classes):
        return 3
    """
)


@pytest.fixture(scope="module")
def user_mod(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("usermods")
    (d / f"{MOD}.py").write_text(SOURCE)
    sys.path.insert(0, str(d))
    try:
        yield MOD
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(MOD, None)


def test_user_factory_auto_stages(user_mod: str) -> None:
    m = models.create(f"{user_mod}:make_tiny", 5, in_channels=1, width=3)
    assert isinstance(m, FeatureWrapper)
    assert m.classifier is m.model.fc and m.embedding_dim == 6 and m.num_classes == 5
    assert m.model.conv1.in_channels == 1
    assert m.stage_names((1, 8, 8)) == ["relu1", "relu2"]
    m.eval()
    x = torch.randn(2, 1, 8, 8)
    out = m.forward_outputs(x)
    assert [tuple(f.shape[1:]) for f in out.feats] == [(3, 8, 8), (6, 4, 4)]
    assert torch.allclose(out.embedding, out.feats[-1].mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(m(x), out.logits)
    assert all(p is f for p, f in zip(out.preacts, out.feats, strict=True))
    assert models.shapes(m, (1, 8, 8)).feats == ((3, 8, 8), (6, 4, 4))


def test_user_factory_stage_override(user_mod: str) -> None:
    m = models.create(f"{user_mod}:make_tiny", 5, stages=["conv1", "conv2"]).eval()
    x = torch.randn(2, 3, 8, 8)
    out = m.forward_outputs(x)
    tiny = m.model
    with torch.no_grad():
        c1 = tiny.conv1(x)
        c2 = tiny.conv2(tiny.pool(tiny.relu1(tiny.bn1(c1))))
    assert m.stages == ["conv1", "conv2"] and m.stage_names((3, 32, 32)) == ["conv1", "conv2"]
    assert torch.allclose(out.feats[0], c1, atol=1e-6) and torch.allclose(out.feats[1], c2, atol=1e-6)
    with pytest.raises(UnknownNameError, match="conv3"):
        models.create(f"{user_mod}:make_tiny", 5, stages=["conv3"])


def test_user_factory_without_in_channels_gets_first_conv_replaced(user_mod: str) -> None:
    m = models.create(f"{user_mod}:make_seq", 4, in_channels=1)
    conv = m.model[0]
    assert conv.in_channels == 1 and conv.out_channels == 4 and conv.padding == (1, 1)
    assert m.stage_names((1, 8, 8)) == ["1"]
    assert m.forward_outputs(torch.randn(2, 1, 8, 8)).logits.shape == (2, 4)


def test_user_factory_zoo_model_returned_as_is(user_mod: str) -> None:
    assert isinstance(models.create(f"{user_mod}:make_zoo", 3, in_channels=1), ZooModel)
    assert isinstance(models.create(f"{user_mod}:make_zoo", 3, stages=["blocks.0"]), FeatureWrapper)


def test_user_factory_errors(user_mod: str) -> None:
    with pytest.raises(ConfigError, match="depth"):
        models.create(f"{user_mod}:make_tiny", 5, depth=3)
    with pytest.raises(UnknownNameError, match="make_tiny"):
        models.create(f"{user_mod}:make_tiyn", 5)
    with pytest.raises(ConfigError, match="cannot import"):
        models.create("_autokd_no_such_module_:make", 5)
    with pytest.raises(ConfigError, match="nn.Module"):
        models.create(f"{user_mod}:not_a_model", 5)


def test_wrapper_direct_and_mode_restored() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )
    w = FeatureWrapper(net).train()
    assert w.classifier is net[9] and w.embedding_dim == 16
    out = w.forward_outputs(torch.randn(4, 3, 32, 32))
    assert w.training and net[1].training  # the discovery probe restored train mode
    assert [tuple(f.shape[1:]) for f in out.feats] == [(8, 16, 16), (16, 8, 8)]
    out.logits.sum().backward()
    assert net[0].weight.grad is not None

    by_name = FeatureWrapper(net, classifier="7")
    assert by_name.classifier is net[7] and by_name.forward_outputs(
        torch.randn(2, 3, 8, 8)
    ).embedding.shape == (2, 16)
    assert FeatureWrapper(net, classifier=net[7]).classifier_name == "7"
    with pytest.raises(ConfigError):
        FeatureWrapper(net, classifier="2")  # not a Linear
    with pytest.raises(ConfigError):
        FeatureWrapper(nn.Conv2d(3, 3, 1))  # no Linear at all


def test_tv_in_channels_and_discovery() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = models.create("tv/resnet18", 10, in_channels=1)
    c = m.model.conv1
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) == (
        1,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
    )
    assert c.bias is None
    assert m.stage_names((1, 32, 32)) == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert m.stage_names((1, 8, 8)) == ["relu", "layer1", "layer4"]  # fewer resolutions on tiny inputs

    import torchvision

    mv2 = torchvision.models.mobilenet_v2(num_classes=3)
    names = discover_stages(mv2, torch.zeros(2, 3, 32, 32), mv2.classifier[1])
    # stage outputs, not the expand conv of the next stride-2 block (features.2.conv.0)
    assert names == ["features.1", "features.3", "features.6", "features.13", "features"]
    with pytest.raises(ConfigError, match="weights"):
        models.create("tv/resnet18", 10, weights="DEFAULT")
