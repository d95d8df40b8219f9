"""Contract tests for every registered zoo model (and a couple of wrapped torchvision models)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autokd import models
from autokd.errors import ConfigError, UnknownNameError
from autokd.outputs import Outputs, Shapes

TV_NAMES = ["tv/resnet18", "tv/mobilenet_v3_small"]
INPUTS = [(1, 8, 8), (3, 32, 32)]
K = 7
# models on token ids (text) take (seq_len,) inputs: they get their own contract test below
TOKEN_NAMES = [n for n in models.names() if models.MODELS.meta(n).get("inputs") == "tokens"]
IMAGE_NAMES = [n for n in models.names() if n not in TOKEN_NAMES]


def _model(name: str, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.create(name, num_classes=K, in_channels=in_channels).eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", INPUTS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", IMAGE_NAMES + TV_NAMES)
def test_contract(name: str, shape: tuple[int, int, int]) -> None:
    model = _model(name, shape[0])
    zoo = not name.startswith("tv/")
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.forward_outputs(x)
        logits = model(x)
    assert isinstance(out, Outputs)
    assert out.logits.shape == (3, K) and logits.shape == (3, K)
    assert _close(logits, out.logits)

    assert out.feats, "no stage features"
    assert len(out.preacts) == len(out.feats)
    prev = (shape[1], shape[2])
    for f, p in zip(out.feats, out.preacts, strict=True):
        assert f.dim() == 4 and f.shape[0] == 3
        assert p.shape == f.shape
        h, w = f.shape[-2:]
        assert 1 <= h <= prev[0] and 1 <= w <= prev[1], [tuple(t.shape) for t in out.feats]
        prev = (h, w)

    clf = model.classifier
    assert isinstance(clf, nn.Linear)
    assert clf.out_features == K == model.num_classes
    assert out.embedding is not None and out.embedding.shape == (3, model.embedding_dim)
    assert model.embedding_dim == clf.in_features
    if out.attention:  # transformers: one stage per block; the embedding is the class token
        assert len(out.attention) == len(out.feats)
        assert all(f.shape[1] == model.embedding_dim for f in out.feats)
        assert _close(out.embedding, out.tokens["cls"])
        assert _close(out.heads.get("cls", out.logits), clf(out.embedding))
    elif zoo or name == "tv/resnet18":
        assert out.feats[-1].shape[1] == model.embedding_dim
        assert _close(out.embedding, out.feats[-1].mean(dim=(2, 3)))
        assert _close(out.logits, clf(out.embedding))

    if zoo:  # post-activation feats; preacts are the same maps before the last ReLU (or equal to them)
        for f, p in zip(out.feats, out.preacts, strict=True):
            if isinstance(model, models.wrn.WideResNet):
                assert (f >= 0).all()
            else:
                assert _close(f, p) or _close(f, F.relu(p))

    s = models.shapes(model, shape)
    assert isinstance(s, Shapes)
    assert s.input_shape == shape and s.num_classes == K and s.embedding == model.embedding_dim
    assert s.feats == tuple(tuple(f.shape[1:]) for f in out.feats)
    assert s.preacts == tuple(tuple(p.shape[1:]) for p in out.preacts)
    assert s.heads == tuple(out.heads) and s.attention == tuple(tuple(a.q.shape[1:]) for a in out.attention)


@pytest.mark.parametrize("seq_len", [1, 12])
@pytest.mark.parametrize("name", TOKEN_NAMES)
def test_token_contract(name: str, seq_len: int) -> None:
    model = _model(name, seq_len)  # the trainer passes input_shape[0] = seq_len as in_channels: unused
    assert not model.input_dtype.is_floating_point
    vocab = model.token_embedding.num_embeddings
    x = torch.randint(0, vocab, (3, seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.forward_outputs(x)
        logits = model(x)
    assert out.logits.shape == (3, K) and _close(logits, out.logits)
    assert out.feats and len(out.preacts) == len(out.feats)
    for f, p in zip(out.feats, out.preacts, strict=True):
        assert f.shape[0] == 3 and f.shape[2:] == (seq_len, 1) and p.shape == f.shape
        assert _close(f, p) or _close(f, F.relu(p))
    assert _close(out.feats[0].squeeze(-1).transpose(1, 2), model.token_embedding(x))  # stage 0 = embedded
    assert _close(out.embedding, out.feats[-1].mean(dim=(2, 3)))
    assert _close(out.logits, model.classifier(out.embedding))
    s = models.shapes(model, (seq_len,))  # probed with token ids (all 0), not float zeros
    assert s.input_shape == (seq_len,) and s.feats == tuple(tuple(f.shape[1:]) for f in out.feats)
    with pytest.raises(ConfigError, match="token ids"):
        model(torch.zeros(3, seq_len))
    with pytest.raises(ConfigError, match="vocab_size"):
        model(torch.full((3, seq_len), vocab))


def test_names_and_metadata() -> None:
    names = models.names()
    expected = {
        "resnet", "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "resnet8x4", "resnet32x4", "wrn", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
        "vgg", "vgg8", "vgg11", "vgg13", "mobilenetv2", "mobilenetv2_x0_5", "shufflenetv2",
        "cnn", "cnn_w2", "cnn_w4", "cnn_w8", "cnn_w32", "moonshine", "moonshine_40_2_g8b2", "moonshine_40_2_b4",
        "moonshine_40_2_dconv", "moonshine_16_2_g4b2", "textcnn", "textcnn_e64", "textcnn_e8", "vit", "vit_t8",
        "deit_t8", "cit_t8", "vit_s8", "vit_t32", "deit_t32", "rednet", "rednet_w8", "rednet_w16",
    }  # fmt: skip
    assert expected <= set(names)
    assert names == sorted(names)
    for n in names:
        meta = models.MODELS.meta(n)
        assert meta["family"] and meta["description"] and "\n" not in meta["description"]
    assert "mobile_half" in models.MODELS


def test_shapes_restores_modes_and_count_params() -> None:
    model = models.create("resnet8", 10, in_channels=1)
    model.train()
    model.layer2.eval()
    s = models.shapes(model, (1, 8, 8))
    assert model.training and model.layer1.training and not model.layer2.training
    assert s.feats == ((16, 8, 8), (16, 8, 8), (32, 4, 4), (64, 2, 2))
    assert s.num_stages == 4
    assert models.count_params(model) == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------- parameter counts


def cifar_resnet_params(depth: int, width: int, stem: int, in_ch: int, k: int) -> int:
    """Hand count: stem conv + BN, BasicBlocks (2 conv3x3 + 2 BN, 1x1 conv + BN projection), linear."""
    n = (depth - 2) // 6
    total = 9 * in_ch * stem + 2 * stem
    cin = stem
    for i, w in enumerate((width, 2 * width, 4 * width)):
        for b in range(n):
            total += 9 * cin * w + 2 * w + 9 * w * w + 2 * w
            if cin != w or (i > 0 and b == 0):
                total += cin * w + 2 * w
            cin = w
    return total + 4 * width * k + k


@pytest.mark.parametrize(
    "name,depth,width,stem",
    [("resnet8", 8, 16, 16), ("resnet20", 20, 16, 16), ("resnet110", 110, 16, 16), ("resnet8x4", 8, 64, 32)],
)
def test_resnet_param_count_exact(name: str, depth: int, width: int, stem: int) -> None:
    assert models.count_params(models.create(name, 100)) == cifar_resnet_params(depth, width, stem, 3, 100)
    assert models.count_params(models.create(name, 10, 1)) == cifar_resnet_params(depth, width, stem, 1, 10)


def test_resnet20_published_size() -> None:
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters (CIFAR-10); CRD's CIFAR-100 version ~0.28M.
    assert models.count_params(models.create("resnet20", 10)) == 272_474
    assert models.count_params(models.create("resnet20", 100)) == 278_324


# CRD (Tian et al. 2020) Table 1/2 parameter counts, CIFAR-100.
CRD_PARAMS = {
    "resnet56": 0.86e6,
    "resnet110": 1.73e6,
    "resnet8x4": 1.23e6,
    "resnet32x4": 7.43e6,
    "wrn_40_2": 2.25e6,
    "wrn_16_2": 0.70e6,
    "wrn_40_1": 0.57e6,
    "vgg13": 9.46e6,
    "vgg8": 3.96e6,
    "mobilenetv2_x0_5": 0.81e6,
    "shufflenetv2": 1.35e6,
}


@pytest.mark.parametrize("name", sorted(CRD_PARAMS))
def test_published_param_counts(name: str) -> None:
    n = models.count_params(models.create(name, 100))
    assert abs(n - CRD_PARAMS[name]) / CRD_PARAMS[name] < 0.02, n


# ----------------------------------------------------------------------------------- builders and errors


def test_family_builders() -> None:
    m = models.create("resnet", 10, depth=14, width=8)
    assert m.embedding_dim == 32 and len(m.layer1) == 2
    assert models.count_params(m) == cifar_resnet_params(14, 8, 8, 3, 10)
    assert models.create("resnet", 10, depth=8, width=64, stem_width=32).conv1.out_channels == 32
    assert models.create("wrn", 10, depth=10, widen=3).embedding_dim == 192
    assert models.create("vgg", 10, depth=11, width=0.25).embedding_dim == 128
    assert models.create("vgg", 10, depth=16).embedding_dim == 512
    assert models.create("mobilenetv2", 10, width_mult=0.5, expansion=4).expansion == 4
    assert models.create("shufflenetv2", 10, width_mult=2).embedding_dim == 2048
    assert models.create("cnn", 10, 1, width=2, depth=5).embedding_dim == 32
    assert models.create("mobile_half", 10).width_mult == 0.5
    assert models.shapes(models.create("cnn", 10, 1, width=2, depth=5), (1, 8, 8)).feats[-1] == (32, 1, 1)


@pytest.mark.parametrize(
    "name,kw,param",
    [
        ("resnet", {"depth": 15}, "depth"),
        ("resnet", {"depth": 2}, "depth"),
        ("resnet", {"width": 0}, "width"),
        ("wrn", {"depth": 17}, "depth"),
        ("wrn", {"widen": 1.5}, "widen"),
        ("vgg", {"depth": 12}, "depth"),
        ("vgg", {"width": -1.0}, "width"),
        ("mobilenetv2", {"width_mult": 0}, "width_mult"),
        ("mobilenetv2", {"expansion": 0}, "expansion"),
        ("shufflenetv2", {"width_mult": 0.7}, "width_mult"),
        ("cnn", {"depth": 0}, "depth"),
        ("cnn", {"width": True}, "width"),
        ("cnn", {"convs": 5}, "convs"),
        ("moonshine", {"depth": 17}, "depth"),
        ("moonshine", {"group_size": 3}, "group_size"),
        ("moonshine", {"widen": 1, "bottleneck": 32}, "bottleneck"),
        ("textcnn", {"kernel_size": 2}, "kernel_size"),
        ("textcnn", {"vocab_size": 0}, "vocab_size"),
        ("resnet20", {"width": 8}, "width"),
        ("resnet", {"dept": 20}, "dept"),
        ("vit", {"width": 30, "heads": 4}, "heads"),
        ("vit", {"stem": "conv_inv"}, "distill_tokens"),
        ("vit", {"head_fusion": "max"}, "head_fusion"),
        ("vit", {"distill_tokens": -1}, "distill_tokens"),
        ("rednet", {"width": 6}, "group_channels"),
        ("rednet", {"kernel_size": 4}, "kernel_size"),
    ],
)
def test_config_errors(name: str, kw: dict, param: str) -> None:
    with pytest.raises(ConfigError) as e:
        models.create(name, 10, **kw)
    msg = str(e.value)
    assert param in msg and name in msg and "\n" not in msg


def test_bad_num_classes_and_channels() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        models.create("resnet8", 0)
    with pytest.raises(ConfigError, match="in_channels"):
        models.create("resnet8", 10, in_channels=0)


def test_unknown_name_has_close_match() -> None:
    with pytest.raises(UnknownNameError) as e:
        models.create("resnt20", 10)
    assert "'resnet20'" in str(e.value) and "did you mean" in str(e.value)
    with pytest.raises(UnknownNameError) as e:
        models.create("tv/resnet19", 10)
    assert "'resnet18'" in str(e.value)
