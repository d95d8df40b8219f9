"""``search.mode: diswot``: the training-free student search, then KD training of exactly the top-k."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autokd import proxies
from autokd.config import StudyConfig
from autokd.context import StudyContext
from autokd.errors import ConfigError
from autokd.proxies.score import build_student
from autokd.search.backends.optuna_backend import make_pruner, make_sampler
from autokd.search.backends.storage import open_study
from autokd.search.diswot import run_diswot, search_students
from autokd.search.space import SearchSpace
from autokd.search.students import StudentCandidate

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = ROOT / "search_spaces" / "students.yaml"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one intra-op thread is faster and steadier on a shared machine
    yield
    torch.set_num_threads(n)


def _fake_score(c: StudentCandidate) -> float:
    """A deterministic stand-in for a proxy: prefers wide, shallow students."""
    kw = c.kwargs
    return float(kw.get("width", kw.get("widen", kw.get("width_mult", 1)))) - 0.01 * float(kw.get("depth", 0))


@pytest.mark.parametrize("method", ["random", "evolution"])
def test_search_respects_the_budget_and_is_seeded(method):
    space = SearchSpace.load(STUDENTS)
    a = search_students(space, _fake_score, method=method, budget=15, population=5, seed=2)
    b = search_students(space, _fake_score, method=method, budget=15, population=5, seed=2)
    assert [c.key for c, _ in a] == [c.key for c, _ in b]
    assert len(a) == 15 and len({c.key for c, _ in a}) == 15
    every = search_students(space, _fake_score, method=method, budget=100, population=5, seed=0)
    assert len(every) == 40  # the space holds 40 students: the search stops when none is left


def test_evolution_finds_better_students_than_its_first_population():
    space = SearchSpace.load(STUDENTS)
    found = search_students(space, _fake_score, method="evolution", budget=25, population=6, seed=0)
    first = max(s for _, s in found[:6])
    assert max(s for _, s in found) > first


def test_bad_method_is_refused():
    with pytest.raises(ConfigError, match="method"):
        search_students(SearchSpace.load(STUDENTS), _fake_score, method="grid", budget=3)


def test_diswot_mode_records_every_candidate_and_trains_exactly_top_k(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny_diswot
device: cpu
output_dir: out
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {STUDENTS}
search: {{mode: diswot, sampler: random, pruner: none, epochs: 1,
          diswot: {{candidates: 6, top_k: 2, population: 3, batch_size: 32}}}}
""")
    cfg = StudyConfig.load(path)
    ctx = StudyContext.open(cfg, log=lambda *a: None)
    space = SearchSpace.load(cfg.space_path)
    study = open_study(cfg, multi_objective=False, sampler=make_sampler(cfg, space), pruner=make_pruner(cfg, 1))
    logs: list[str] = []
    top = run_diswot(ctx, space, study, cfg.search.diswot, log=logs.append)

    rows = study.user_attrs["diswot_candidates"]
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
    assert all(isinstance(r["score"], float) and r["params"] > 0 for r in rows)
    # a recorded score is the proxy's score of that student, initialised with the study seed
    r0 = rows[0]
    cand = StudentCandidate(r0["option"], r0["name"], r0["kwargs"])
    batch = proxies.proxy_batch(ctx.data, 32, seed=cfg.seed)
    student = build_student(cand, ctx.data.num_classes, 1, seed=cfg.seed)
    assert proxies.create("diswot")(student, ctx.teacher, batch, seed=cfg.seed) == pytest.approx(r0["score"])

    best = sorted(rows, key=lambda r: -r["score"])[:2]
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.user_attrs["diswot_rank"] for t in trials] == [0, 1]
    assert [t.user_attrs["proxy_score"] for t in trials] == [r["score"] for r in best]
    assert [t.user_attrs["student"] for t in trials] == [r["student"] for r in best]
    assert [r["student"] for r in top] == [r["student"] for r in best]
    assert [r["trial"] for r in top] == [0, 1] and all(0 <= r["val_acc"] <= 1 for r in top)
    assert study.user_attrs["diswot"]["evaluated"] == 6

    # resume: scores are reused, nothing is trained twice
    top2 = run_diswot(ctx, space, study, cfg.search.diswot, log=logs.append)
    assert len(study.get_trials()) == 2 and [r["trial"] for r in top2] == [0, 1]
    assert "(6 reused)" in logs[-1] or any("(6 reused)" in m for m in logs)
