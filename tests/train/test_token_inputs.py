"""Integer token inputs through the whole path: shape probing, FLOP counting, cached teacher outputs, the
trainer, and a search over the shipped text space and study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autokd import data, models
from autokd.config import StudyConfig
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.search.run import run_search
from autokd.search.space import SearchSpace
from autokd.train import CachedTeacher, OnlineTeacher, Trainer, measure_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bundle():
    return data.create("fake_text", seed=0, n=400, seq_len=16, vocab_size=300)


def test_flops_of_a_text_model_by_hand():
    """FlopCounterMode on one zero token sequence: the conv (2·D·k FLOPs per output, C·L outputs) and the
    classifier (2·C·K); the embedding lookup and BN count nothing."""
    m = models.create("textcnn", 4, vocab_size=300, embed_dim=12, channels=10, kernel_size=3)
    info = measure_model(m, (16,))
    assert info["flops"] == 2 * 12 * 3 * 10 * 16 + 2 * 10 * 4
    assert info["params"] == models.count_params(m) and info["latency_ms"] > 0
    assert models.example_input(m, (16,), batch=3).dtype == torch.int64
    assert models.example_input(models.create("cnn", 4, 1), (1, 8, 8)).dtype == torch.float32


def test_cached_teacher_outputs_on_token_data(bundle, tmp_path):
    t = models.create("textcnn", bundle.num_classes, vocab_size=300, embed_dim=8).eval()
    cached = CachedTeacher(t, bundle, torch.device("cpu"), cache_dir=tmp_path, key="text")
    online = OnlineTeacher(t)
    for x, _, idx in bundle.loader("train", 32, shuffle=True, seed=2):
        assert x.dtype == torch.int64
        a, b = cached.batch(x, idx, needs_feats=True), online.batch(x, idx, needs_feats=True)
        torch.testing.assert_close(a.logits, b.logits)
        torch.testing.assert_close(a.feats[-1], b.feats[-1])
    assert any(tmp_path.iterdir())


def test_trainer_with_a_feature_term_on_text(bundle):
    """Feature-level terms work on the (N, C, L, 1) stage maps of text models."""
    teacher = models.create("textcnn", bundle.num_classes, vocab_size=300, embed_dim=16, channels=16).eval()
    recipe = Recipe(student=StudentSpec(name="textcnn", kwargs={"vocab_size": 300, "embed_dim": 4}), ce_weight=1.0,
                    terms=[TermSpec(loss="at", weight=100.0), TermSpec(loss="kd", weight=0.5)],
                    optim=OptimSpec(epochs=2, batch_size=32))
    fit = Trainer(bundle, teacher=teacher, device="cpu").fit(recipe)
    assert len(fit.history) == 2 and fit.metrics["flops"] > 0 and 0 <= fit.metrics["val_acc"] <= 1


def test_shipped_text_study_and_space_run(tmp_path):
    cfg = StudyConfig.load(ROOT / "studies" / "fake_text.yaml")
    assert cfg.space_path.is_file() and cfg.data.name == "fake_text"
    space = SearchSpace.load(cfg.space_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    chosen = set()
    for _ in range(30):
        trial = study.ask()
        chosen |= {t.loss for t in space.suggest(trial).terms}
        study.tell(trial, 0.0)
    assert chosen == {"kd", "embedding_encoding"}
    path = tmp_path / "text.yaml"
    path.write_text(f"""
name: text_run
device: cpu
output_dir: out
data: {{name: fake_text, train_fraction: 0.5, kwargs: {{n: 300, vocab_size: 1000, seq_len: 16}}}}
teacher: {{name: textcnn, kwargs: {{vocab_size: 1000, embed_dim: 16, channels: 16}}, epochs: 1}}
space: {cfg.space_path}
search: {{sampler: random, pruner: none, trials: 3, epochs: 1, baselines: false}}
""")
    study = run_search(StudyConfig.load(path), log=lambda *a: None)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert (tmp_path / "out" / "best_recipe.yaml").is_file()
