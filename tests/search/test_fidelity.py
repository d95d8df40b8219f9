"""Cheaper fidelities: a fixed, stratified data subset per study seed and fewer epochs for trials; recipes
record full fidelity (what the final retrain runs)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch

from autokd import data
from autokd.config import StudyConfig
from autokd.errors import ConfigError
from autokd.search import trial_record as tr
from autokd.search.run import run_search

ROOT = Path(__file__).resolve().parents[2]


def test_train_subset_is_stratified_fixed_by_seed_and_leaves_val_test_alone():
    b = data.create("digits", seed=0)
    sub = data.train_subset(b, 0.25, seed=3)
    n = len(b.train)
    assert abs(len(sub.train) - round(0.25 * n)) <= 1 and len(sub.train_eval) == len(sub.train)
    assert sub.val is b.val and sub.test is b.test and sub.sizes["val"] == b.sizes["val"]
    full_counts, counts = Counter(b.train.y.tolist()), Counter(sub.train.y.tolist())
    for c, k in full_counts.items():
        assert abs(counts[c] - 0.25 * k) <= 1.5  # stratified: each class keeps its share
    again, other = data.train_subset(b, 0.25, seed=3), data.train_subset(b, 0.25, seed=4)
    assert torch.equal(again.train.x, sub.train.x) and not torch.equal(other.train.x, sub.train.x)
    rows = {tuple(r.flatten().tolist()) for r in b.train.x}
    assert all(tuple(r.flatten().tolist()) in rows for r in sub.train.x)  # samples of the training split
    assert sub.info["fingerprint"] != b.info["fingerprint"] != other.info["fingerprint"]
    assert data.train_subset(b, 1.0, seed=3) is b
    with pytest.raises(ConfigError, match="data_fraction"):
        data.train_subset(b, 0.0, seed=3)


def test_subset_of_augmented_data_keeps_the_augmentation_for_training_only():
    b = data.create("fake", image_size=8, n=200, augment="crop_flip")
    sub = data.train_subset(b, 0.5, seed=0)
    assert sub.train.augment is b.train.augment and sub.train_eval.augment is None
    assert torch.equal(sub.train.x, sub.train_eval.x) and not sub.deterministic_train


def test_a_study_trains_trials_at_low_fidelity_and_records_full_fidelity(tmp_path):
    path = tmp_path / "fid.yaml"
    path.write_text(f"""
name: fid
device: cpu
data: {{name: digits, train_fraction: 0.3}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search: {{sampler: random, pruner: none, trials: 1, epochs: 3, baseline_students: 1,
          fidelity: {{data_fraction: 0.5, epochs: 1}}}}
""")
    cfg = StudyConfig.load(path)
    study = run_search(cfg, log=lambda *a: None)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:
        assert t.user_attrs[tr.Key.EPOCHS.value] == 1  # trained at low fidelity
        assert tr.recipe_of(t).optim.epochs == 3  # recorded (and exported, retrained) at full fidelity
    from autokd.context import StudyContext

    ctx = StudyContext.open(cfg, log=lambda *a: None)
    trainer = ctx.trial_trainer()
    assert trainer is ctx.trial_trainer() and abs(len(trainer.data.train) - len(ctx.data.train) / 2) <= 1
    bad = path.read_text().replace("data_fraction: 0.5", "data_fraction: 1.5")
    path.write_text(bad)
    with pytest.raises(ConfigError, match="data_fraction"):
        StudyConfig.load(path)
