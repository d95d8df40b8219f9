"""The shipped ViT study (studies/digits_vit.yaml, CNN teacher -> tiny ViT students) runs end to end at the
suite's smoke size: search with baselines, export, and a retrain of the best recipe; and the ViT-teacher space
runs its relation methods."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autokd.config import StudyConfig
from autokd.context import StudyContext
from autokd.recipe import Recipe
from autokd.retrain import retrain
from autokd.search import trial_record as tr
from autokd.search.run import run_search
from autokd.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _smoke(cfg: StudyConfig, out: Path) -> StudyConfig:
    cfg.output_dir = str(out)
    cfg.device = "cpu"
    cfg.data.train_fraction = 0.15
    cfg.teacher.epochs = 1
    cfg.search.trials = 2
    cfg.search.epochs = 1
    cfg.search.sampler = "random"
    cfg.search.pruner = "none"
    return cfg


def test_digits_vit_study_runs_end_to_end(tmp_path):
    cfg = _smoke(StudyConfig.load(ROOT / "studies" / "digits_vit.yaml"), tmp_path / "vit")
    assert cfg.space_path.resolve() == ROOT / "search_spaces" / "vit.yaml"
    study = run_search(cfg, log=lambda *a: None)
    states = {t.state for t in study.trials}
    assert len(study.trials) == 4 and optuna.trial.TrialState.FAIL not in states
    baselines = sorted(t.user_attrs["baseline"] for t in study.trials if t.user_attrs.get("baseline"))
    assert baselines == ["ce_only", "kd"]
    assert all(tr.recipe_of(t).student.kwargs["distill_tokens"] == 2 for t in study.trials)
    best = Recipe.load(cfg.study_dir / "best_recipe.yaml")
    ctx = StudyContext.open(cfg, log=lambda *a: None)
    res = retrain(ctx, best, seeds=1, epochs=1, log=lambda *a: None, baselines=False)
    assert 0.0 <= res.rows["recipe"][0] <= 1.0


def test_vit_teacher_space_runs_its_relation_methods(tmp_path):
    path = tmp_path / "rel.yaml"
    path.write_text(f"""
name: rel
device: cpu
output_dir: {tmp_path / 'rel'}
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: vit, kwargs: {{patch_size: 2, depth: 4, width: 32, heads: 4, img_size: 8}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'vit_relations.yaml'}
search: {{sampler: random, pruner: none, trials: 3, epochs: 1, baselines: false}}
""")
    space = SearchSpace.load(ROOT / "search_spaces" / "vit_relations.yaml")
    assert {"tinymim", "vit_attention", "deit"} <= {c.loss for c in space.file.terms.choices()}
    study = run_search(StudyConfig.load(path), log=lambda *a: None)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), [
        t.user_attrs.get("prune_reason") for t in study.trials]
