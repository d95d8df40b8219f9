"""The transformer zoo (ViT/DeiT/CiT configs), the involution op, transformer stage discovery and Q/K/V capture
(zoo and torchvision), token <-> map layouts and the extended Outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autokd import models
from autokd.errors import ConfigError
from autokd.models.connectors import FeatureConnector, map_to_tokens, tokens_to_map
from autokd.models.involution import Involution
from autokd.models.tokens import token_grid, transformer_blocks
from autokd.models.vit import ViT
from autokd.outputs import QKV, Outputs, Shapes
from autokd.pairs import auto_pairs, depth_pairs

VITS = [n for n in models.names() if models.MODELS.meta(n).get("family") == "vit"]
SMALL_TV = "torchvision.models.vision_transformer:VisionTransformer"
SMALL_TV_KW = {"image_size": 8, "patch_size": 2, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}


def _close(a, b, tol=1e-5):
    return torch.allclose(a, b, rtol=1e-4, atol=tol)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)], ids=["8x8", "32x32"])
@pytest.mark.parametrize("name", VITS)
def test_every_vit_config_shapes_tokens_heads(name, shape):
    torch.manual_seed(0)
    m = models.create(name, 7, in_channels=shape[0]).eval()
    assert isinstance(m, ViT)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = m.forward_outputs(x)
    k, p, d, h = m.distill_tokens, m.patch_size, m.width, m.heads
    grid = (shape[1] // p, shape[2] // p)
    length = 1 + k + grid[0] * grid[1]
    assert len(out.feats) == len(out.attention) == m.depth
    assert all(f.shape == (2, d, *grid) for f in out.feats)
    assert all(a.q.shape == a.k.shape == a.v.shape == (2, h, length, d // h) for a in out.attention)
    names = ["cls"] + [f"dist_{i}" for i in range(k)]
    assert list(out.heads) == names == list(out.tokens)
    assert all(out.heads[n].shape == (2, 7) for n in names) and all(out.tokens[n].shape == (2, d) for n in names)
    assert _close(out.embedding, out.tokens["cls"]) and _close(out.heads["cls"], m.classifier(out.embedding))
    for i in range(k):
        assert _close(out.heads[f"dist_{i}"], m.dist_heads[i](out.tokens[f"dist_{i}"]))
    assert _close(out.logits, torch.stack([out.heads[n] for n in names]).mean(0))  # official: mean of logits
    s = models.shapes(m, shape)
    assert s.heads == tuple(names) and s.attention == ((h, length, d // h),) * m.depth


def _manual_blocks(m: ViT, x: torch.Tensor):
    """The zoo ViT's token stream recomputed by hand from its weights: per block (input, q, k, v, output)."""
    n = x.shape[0]
    patches = F.conv2d(x, m.patch_embed.weight, m.patch_embed.bias, stride=m.patch_size)
    gh, gw = patches.shape[-2:]
    z = patches.flatten(2).transpose(1, 2)
    prefix = [m.cls_token.expand(n, -1, -1)] + ([m.dist_tokens.expand(n, -1, -1)] if m.dist_tokens is not None else [])
    z = torch.cat(prefix + [z], 1) + m.pos_embed
    rows = []
    d, h = m.width, m.heads
    for blk in m.blocks:
        a = F.layer_norm(z, (d,), blk.norm1.weight, blk.norm1.bias, eps=1e-6)
        w, b = blk.attn.qkv.weight, blk.attn.qkv.bias
        q, k, v = (a @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d] for i in range(3))
        split = [t.reshape(n, -1, h, d // h).transpose(1, 2) for t in (q, k, v)]
        att = torch.softmax(split[0] @ split[1].transpose(-2, -1) / math.sqrt(d // h), -1) @ split[2]
        y = z + (att.transpose(1, 2).reshape(n, -1, d) @ blk.attn.proj.weight.T + blk.attn.proj.bias)
        y2 = F.layer_norm(y, (d,), blk.norm2.weight, blk.norm2.bias, eps=1e-6)
        y = y + blk.mlp[2](F.gelu(blk.mlp[0](y2)))
        rows.append((split, y))
        z = y
    return rows, (gh, gw)


@pytest.mark.parametrize("distill_tokens", [0, 1])
def test_zoo_qkv_hooks_equal_manual_recomputation_from_the_weights(distill_tokens):
    torch.manual_seed(3)
    m = models.create("vit", 10, in_channels=1, patch_size=2, depth=3, width=24, heads=3, img_size=8,
                      distill_tokens=distill_tokens)
    m.train()
    x = torch.randn(4, 1, 8, 8)
    out = m.forward_outputs(x)
    rows, grid = _manual_blocks(m, x)
    p = 1 + distill_tokens
    for (qkv, y), a, f in zip(rows, out.attention, out.feats, strict=True):
        for mine, got in zip(qkv, a, strict=True):
            assert _close(got, mine, 1e-5)
        assert _close(f, y[:, p:].transpose(1, 2).reshape(4, 24, *grid), 1e-5)
    # captured on the projection with autograd: a loss on Q reaches the qkv weights
    out.attention[0].q.sum().backward()
    assert m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(len(b.attn.qkv._forward_hooks) == 0 for b in m.blocks)  # hooks removed after the call


def test_torchvision_vit_qkv_from_multihead_attention_projection():
    torch.manual_seed(0)
    m = models.create(SMALL_TV, 10, in_channels=1, **SMALL_TV_KW).eval()
    assert m.stage_names((1, 8, 8)) == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    assert transformer_blocks(m.model) == m.stage_names((1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():  # eval + no_grad: torch takes MultiheadAttention's fused fast path
        out = m.forward_outputs(x)
    tv = m.model
    z = tv._process_input(x)
    z = torch.cat([tv.class_token.expand(3, -1, -1), z], 1) + tv.encoder.pos_embedding
    for layer, a, f in zip(tv.encoder.layers, out.attention, out.feats, strict=True):
        mha = layer.self_attention
        inp = layer.ln_1(z)
        w, b = mha.in_proj_weight, mha.in_proj_bias
        for i, got in enumerate(a):
            mine = (inp @ w[16 * i:16 * (i + 1)].T + b[16 * i:16 * (i + 1)]).reshape(3, -1, 2, 8).transpose(1, 2)
            assert _close(got, mine)
        z = layer(z)
        assert _close(f, z[:, 1:].transpose(1, 2).reshape(3, 16, 4, 4))
    assert _close(out.tokens["cls"], z[:, 0])
    assert _close(out.embedding, tv.encoder.ln(z)[:, 0])
    assert models.shapes(m, (1, 8, 8)).attention == ((2, 17, 8), (2, 17, 8))


def test_tv_vit_b16_wrapped_at_32x32():
    m = models.create("tv/vit_b_16", 5, in_channels=1, image_size=32).eval()
    s = models.shapes(m, (1, 32, 32))
    assert s.num_stages == 12 and s.feats[0] == (768, 2, 2) and s.attention[0] == (12, 5, 64)


def test_head_selection_and_fusions_are_saved_with_the_model():
    torch.manual_seed(0)
    m = models.create("vit", 10, in_channels=1, patch_size=2, depth=1, width=16, heads=2, img_size=8,
                      distill_tokens=2).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        out = m.forward_outputs(x)
        hs = out.heads
        assert _close(m(x), (hs["cls"] + hs["dist_0"] + hs["dist_1"]) / 3)
        m.select_heads(["dist_0"])
        assert m.head_mask.tolist() == [1.0, 1.0, 0.0]
        assert _close(m(x), (hs["cls"] + hs["dist_0"]) / 2)
        twin = models.create("vit", 10, in_channels=1, patch_size=2, depth=1, width=16, heads=2, img_size=8,
                             distill_tokens=2, head_fusion="softmax").eval()
        twin.load_state_dict(m.state_dict())
        probs = (hs["cls"].softmax(1) + hs["dist_0"].softmax(1)) / 2  # the paper's late fusion of softmaxes
        assert _close(twin(x).exp(), probs) and torch.equal(twin(x).argmax(1), probs.argmax(1))
    with pytest.raises(ConfigError, match="dist_5"):
        m.select_heads(["dist_5"])


def test_position_embeddings_resampled_for_other_input_sizes():
    torch.manual_seed(0)
    m = models.create("vit", 10, in_channels=1, patch_size=2, depth=1, width=16, heads=2, img_size=8)
    assert torch.equal(m._pos(4, 4), m.pos_embed)
    grid = m.pos_embed[:, 1:].transpose(1, 2).reshape(1, 16, 4, 4)
    want = F.interpolate(grid, size=(8, 6), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    assert _close(m._pos(8, 6)[:, 1:], want) and torch.equal(m._pos(8, 6)[:, :1], m.pos_embed[:, :1])
    assert m.forward_outputs(torch.randn(2, 1, 16, 12)).feats[0].shape == (2, 16, 8, 6)


def test_coadvise_stem_tokens_are_the_stem_means():
    torch.manual_seed(0)
    m = models.create("cit_t8", 10, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    conv, inv = m.patch_embed(x)
    with torch.no_grad():
        out = m.forward_outputs(x)
    assert out.attention[0].q.shape[2] == 3 + 16
    a = F.layer_norm(torch.cat([m.cls_token.expand(2, -1, -1), conv.flatten(2).mean(2)[:, None],
                                inv.flatten(2).mean(2)[:, None], (conv + inv).flatten(2).transpose(1, 2)], 1)
                     + m.pos_embed, (32,), m.blocks[0].norm1.weight, m.blocks[0].norm1.bias, eps=1e-6)
    q = (a @ m.blocks[0].attn.qkv.weight[:32].T + m.blocks[0].attn.qkv.bias[:32]).reshape(2, -1, 2, 16)
    assert _close(out.attention[0].q, q.transpose(1, 2))


# ----------------------------------------------------------------------------------------------- involution
def _involution_by_loops(inv: Involution, x: torch.Tensor) -> torch.Tensor:
    """y[n, c, i, j] = Σ_{u,v} W[n, g(c), u·K+v, i, j] · x_pad[n, c, s·i + u, s·j + v], written as loops."""
    k, s = inv.kernel_size, inv.stride
    kern = inv.kernels(x)
    n, c, hh, ww = x.shape
    xp = F.pad(x, [(k - 1) // 2] * 4)
    gc = c // inv.groups
    out = torch.zeros(n, c, kern.shape[-2], kern.shape[-1])
    for ch in range(c):
        for i in range(kern.shape[-2]):
            for j in range(kern.shape[-1]):
                for u in range(k):
                    for v in range(k):
                        out[:, ch, i, j] += kern[:, ch // gc, u * k + v, i, j] * xp[:, ch, s * i + u, s * j + v]
    return out


@pytest.mark.parametrize("stride,size", [(1, 5), (2, 6), (2, 5)])
def test_involution_matches_its_formula(stride, size):
    torch.manual_seed(0)
    inv = Involution(8, kernel_size=3, stride=stride, group_channels=4).eval()
    x = torch.randn(2, 8, size, size)
    with torch.no_grad():
        assert _close(inv(x), _involution_by_loops(inv, x))
        kern = inv.kernels(x)
    assert kern.shape == (2, 2, 9, math.ceil(size / stride), math.ceil(size / stride))


def test_involution_kernel_is_spatially_specific_and_channel_shared():
    torch.manual_seed(0)
    inv = Involution(4, kernel_size=3, group_channels=4).eval()
    x = torch.zeros(1, 4, 5, 5)
    x[0, :, 2, 2] = 1.0  # a delta: the response at (i, j) is the kernel weight pointing at the centre
    with torch.no_grad():
        y, kern = inv(x), inv.kernels(x)
    assert torch.equal(y[0, 0], y[0, 3])  # one group: every channel gets the same spatial kernel
    assert _close(y[0, 0, 1, 1], kern[0, 0, 8, 1, 1]) and _close(y[0, 0, 3, 3], kern[0, 0, 0, 3, 3])


# ----------------------------------------------------------------------------------- layouts and Outputs
@pytest.mark.parametrize("tokens,hw,want", [(17, (8, 8), (1, 4, 4)), (18, (8, 8), (2, 4, 4)),
                                            (50, (224, 224), (1, 7, 7)), (18, (8, 16), (0, 3, 6)),
                                            (9, (8, 16), (1, 2, 4)), (2, (8, 8), (1, 1, 1))])
def test_token_grid(tokens, hw, want):
    assert token_grid(tokens, hw) == want


def test_token_map_layouts_roundtrip_and_connect_to_cnn_maps():
    t = torch.randn(2, 1 + 12, 5)
    fmap = tokens_to_map(t, (3, 4), prefix=1)
    assert fmap.shape == (2, 5, 3, 4) and torch.equal(fmap[:, :, 1, 2], t[:, 1 + 4 + 2])
    assert torch.equal(map_to_tokens(fmap), t[:, 1:])
    vit_to_cnn = FeatureConnector((5, 3, 4), (16, 6, 8))
    cnn_to_vit = FeatureConnector((16, 6, 8), (5, 3, 4))
    assert vit_to_cnn(fmap).shape == (2, 16, 6, 8) and cnn_to_vit(torch.randn(2, 16, 6, 8)).shape == (2, 5, 3, 4)


def test_cnn_vit_stage_pairing():
    cnn = models.shapes(models.create("cnn", 10, 1, width=8), (1, 8, 8))
    vit = models.shapes(models.create("vit_t8", 10, 1), (1, 8, 8))
    assert auto_pairs(cnn, vit) == [(1, 2), (2, 3)]  # the deepest stages always paired; 3 CNN stages, 4 blocks
    assert auto_pairs(vit, cnn) == [(2, 1), (3, 2)]
    assert depth_pairs(cnn, vit, [0.5, 1.0]) == [(1, 2), (2, 3)]


def test_outputs_new_fields_survive_apply_index_cat_and_state():
    def outs(n, off):
        a = [QKV(*(torch.arange(n * 2 * 3 * 4, dtype=torch.float).reshape(n, 2, 3, 4) + off + j for j in range(3)))]
        return Outputs(torch.full((n, 5), off), heads={"cls": torch.full((n, 5), off + 1)},
                       tokens={"cls": torch.full((n, 6), off + 2)}, attention=a)

    a, b = outs(2, 0.0), outs(3, 10.0)
    cat = Outputs.cat([a, b])
    assert cat.heads["cls"].shape == (5, 5) and cat.tokens["cls"].shape == (5, 6)
    assert cat.attention[0].v.shape == (5, 2, 3, 4) and torch.equal(cat.attention[0].k[2:], b.attention[0].k)
    sub = cat.index(torch.tensor([0, 4]))
    assert torch.equal(sub.attention[0].q[1], b.attention[0].q[2]) and sub.heads["cls"][1, 0] == 11
    assert isinstance(sub.attention[0], QKV)
    x = torch.ones(2, 5, requires_grad=True)
    g = Outputs(x, heads={"h": x * 2}, attention=[QKV(x, x, x)]).detach()
    assert not g.heads["h"].requires_grad and not g.attention[0].q.requires_grad
    back = Outputs.from_state(cat.state())
    assert torch.equal(back.attention[0].v, cat.attention[0].v) and torch.equal(back.tokens["cls"], cat.tokens["cls"])
    assert Outputs.from_state({"logits": x, "feats": [], "preacts": [], "embedding": None}).attention == []
    assert Shapes.of(cat, (1, 8, 8)).attention == ((2, 3, 4),) and Shapes.of(cat, (1, 8, 8)).heads == ("cls",)


def test_flops_count_the_fused_attention():
    m = models.create("vit", 10, in_channels=1, patch_size=2, depth=1, width=16, heads=2, img_size=8, mlp_ratio=1.0)
    with models.flop_counter() as fc, torch.no_grad():
        m(torch.zeros(1, 1, 8, 8))
    length, d = 17, 16
    linear = 2 * length * d * (3 * d + d + d + d)  # qkv, proj, two MLP layers (ratio 1)
    attention = 2 * 2 * length * length * d  # Q·Kᵀ and A·V, 2 FLOPs per multiply-add
    patch = 2 * 16 * d * 4  # 16 patches, a 2×2×1 kernel per output channel
    head = 2 * d * 10
    assert fc.get_total_flops() == linear + attention + patch + head


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="multiple of heads"):
        models.create("vit", 10, width=30, heads=4)
    with pytest.raises(ConfigError, match="distill_tokens: 2"):
        models.create("vit", 10, stem="conv_inv", distill_tokens=1)
