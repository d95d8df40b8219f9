"""Quantization Mimic (Wei et al. ECCV 2018) and embedding encoding (Mou et al. CIKM 2016) against independent
computations, and the text distillation they enable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autokd import Distiller, data, losses, models
from autokd.errors import ConfigError
from autokd.losses.embedding import EncodedEmbedding
from autokd.losses.quantization import quantization_mimic_loss, quantize_like
from autokd.outputs import Outputs
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer, make_teacher_source


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------ quantization_mimic
def _mimic(bits=4):
    torch.manual_seed(0)
    s = models.create("cnn", 10, in_channels=1, width=2)
    t = models.create("cnn", 10, in_channels=1, width=8)
    loss = losses.create("quantization_mimic", student=models.shapes(s, (1, 8, 8)),
                         teacher=models.shapes(t, (1, 8, 8)), bits=bits)
    return s, t, loss


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_mimic_against_a_hand_quantizer(bits):
    s, t, loss = _mimic(bits)
    x = torch.randn(8, 1, 8, 8)
    s_out, t_out = s.forward_outputs(x), t.forward_outputs(x)
    value = loss(s_out, t_out, torch.zeros(8, dtype=torch.long))
    # independent: the teacher's last map is post-ReLU, so min = 0, zero point 0, step = max / (2^b - 1)
    tm = t_out.feats[-1].detach().numpy().astype(np.float64)
    rm = loss.connectors[0](s_out.feats[-1]).detach().numpy().astype(np.float64)
    step = tm.max() / (2**bits - 1)

    def q(a):
        return np.clip(np.round(a / step), 0, 2**bits - 1) * step

    expected = 0.5 * ((q(rm) - q(tm)) ** 2).reshape(8, -1).sum(1).mean()
    assert value.item() == pytest.approx(expected, rel=1e-4)
    assert loss.layer_pairs == [(2, 2)] and loss.connectors[0].proj[0].out_channels == 32


def test_mimic_gradient_is_straight_through_and_range_frozen_in_eval():
    s, t, loss = _mimic(2)
    x = torch.randn(8, 1, 8, 8)
    t_out = t.forward_outputs(x)
    r = (torch.randn(8, 32, 2, 2) * 5).requires_grad_(True)  # many values far outside the teacher's range
    scale, zp = loss._qparams(0, t_out.feats[-1])
    v = quantization_mimic_loss(r, t_out.feats[-1], scale, zp, 2)
    v.backward()
    qr, qt = quantize_like(r, scale, zp, 2), quantize_like(t_out.feats[-1], scale, zp, 2)
    torch.testing.assert_close(r.grad, (qr - qt).detach() / 8)  # d/dr of ½Σ(q(r) − q(t))²/N with dq/dr = 1
    assert (r.grad != 0).float().mean() > 0.5
    loss.eval()
    before = loss.observers[0].max_val.clone()
    loss(s.forward_outputs(x), t.forward_outputs(x * 10), torch.zeros(8, dtype=torch.long))
    assert torch.equal(loss.observers[0].max_val, before)


# ------------------------------------------------------------------------------------------ embedding_encoding
def _text_pair():
    torch.manual_seed(0)
    t = models.create("textcnn", 4, vocab_size=50, embed_dim=16, channels=8)
    s = models.create("textcnn", 4, vocab_size=50, embed_dim=3, channels=8)
    return s, t.eval()


def test_encoding_installs_the_teachers_table_and_bakes_it():
    s, t = _text_pair()
    loss = losses.create("embedding_encoding", activation="tanh")
    loss.setup(student_model=s, teacher_model=t)
    enc = s.token_embedding
    assert isinstance(enc, EncodedEmbedding) and enc.source.data_ptr() == t.token_embedding.weight.data_ptr()
    ids = torch.randint(0, 50, (5, 7))
    w, b = enc.encoder.weight.detach().numpy(), enc.encoder.bias.detach().numpy()
    table = t.token_embedding.weight.detach().numpy()
    expected = np.tanh(table[ids.numpy()] @ w.T + b)  # f(W · e_t(w) + b), independent of the module
    np.testing.assert_allclose(enc(ids).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert {n for n, _ in s.named_parameters()} >= {"token_embedding.encoder.weight", "token_embedding.encoder.bias"}
    with torch.no_grad():
        before = s.eval()(ids)
    loss.finish(s)
    assert type(s.token_embedding) is torch.nn.Embedding and s.token_embedding.weight.shape == (50, 3)
    with torch.no_grad():
        torch.testing.assert_close(s(ids), before)
    fresh = models.create("textcnn", 4, vocab_size=50, embed_dim=3, channels=8)
    assert list(fresh.state_dict()) == list(s.state_dict())  # the export is an ordinary small-embedding model
    assert models.count_params(s) == models.count_params(fresh)


def test_encoding_value_is_matching_softmax_by_hand():
    s, t = _text_pair()
    loss = losses.create("embedding_encoding", temperature=3.0)
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(6, 4)) * 3, rng.normal(size=(6, 4)) * 3
    v = loss(Outputs(torch.tensor(zs, dtype=torch.float32)), Outputs(torch.tensor(zt, dtype=torch.float32)),
             torch.zeros(6, dtype=torch.long))

    def softmax(z):
        e = np.exp(z / 3.0 - (z / 3.0).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(zt), softmax(zs)
    expected = 9.0 * (p * (np.log(p) - np.log(q))).sum(1).mean()
    assert v.item() == pytest.approx(expected, rel=1e-5)


def test_encoding_refuses_models_without_a_token_table():
    loss = losses.create("embedding_encoding")
    cnn = models.create("cnn", 10, in_channels=1)
    s, t = _text_pair()
    with pytest.raises(ConfigError, match="needs text models .* the student 'SmallCNN' has none") as e:
        loss.setup(student_model=cnn, teacher_model=t)
    assert "\n" not in str(e.value)
    other = models.create("textcnn", 4, vocab_size=60, embed_dim=16)
    with pytest.raises(ConfigError, match="vocabularies differ"):
        loss.setup(student_model=s, teacher_model=other)


def test_text_teacher_distils_into_a_compressed_embedding_student():
    """On fake_text a textcnn teacher (64-dim embedding, full training split) is distilled into an 8-dim student
    on 40% of it: the encoder and the student train (loss falls), the exported student has a plain 8-dim table
    and beats chance clearly; teacher outputs come from the cache (token inputs)."""
    full = data.create("fake_text", seed=0, train_fraction=1.0, n=1000)
    torch.manual_seed(0)
    teacher = Trainer(full, device="cpu").fit(
        Recipe(student=StudentSpec(name="textcnn", kwargs={"embed_dim": 64, "channels": 32}),
               optim=OptimSpec(epochs=6, batch_size=32, lr=0.2)), measure=False).student.eval()
    part = data.create("fake_text", seed=0, train_fraction=0.4, n=1000)
    source = make_teacher_source("auto", teacher, part, torch.device("cpu"))
    recipe = Recipe(student=StudentSpec(name="textcnn", kwargs={"embed_dim": 8, "channels": 16}), ce_weight=0.5,
                    terms=[TermSpec(loss="embedding_encoding", weight=1.0)],
                    optim=OptimSpec(epochs=8, batch_size=32, lr=0.2))
    fit = Trainer(part, teacher=teacher, teacher_source=source, device="cpu").fit(recipe)
    train_losses = [h["train_loss"] for h in fit.history]
    assert all(math.isfinite(v) for v in train_losses) and train_losses[-1] < 0.8 * train_losses[0]
    assert type(fit.student.token_embedding) is torch.nn.Embedding and fit.student.token_embedding.embedding_dim == 8
    assert fit.metrics["params"] == models.count_params(models.create("textcnn", 4, embed_dim=8, channels=16))
    assert fit.metrics["flops"] > 0 and fit.metrics["val_acc"] > 0.4  # 4 classes


def test_distiller_user_loop_finish():
    s, t = _text_pair()
    r = Recipe(student=StudentSpec(name="textcnn"), terms=[TermSpec(loss="embedding_encoding")])
    d = Distiller(t, s, r, input_shape=(7,))
    x, y = torch.randint(0, 50, (4, 7)), torch.randint(0, 4, (4,))
    d(x, y)["loss"].backward()
    assert s.token_embedding.encoder.weight.grad is not None
    d.finish()
    assert type(s.token_embedding) is torch.nn.Embedding
