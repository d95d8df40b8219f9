"""Student candidates of a space and ``score_candidates`` / ``write_csv``."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import optuna
import pytest
import torch

from autokd import data, models
from autokd.errors import ConfigError
from autokd.search.space import SearchSpace
from autokd.search.student_ranking import rank_rows, score_candidates, write_csv
from autokd.search.students import enumerate_students, mutate_student, random_student, sample_students

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = ROOT / "search_spaces" / "students.yaml"


@pytest.fixture(scope="module")
def space():
    return SearchSpace.load(STUDENTS)


def test_enumerate_matches_the_space_count(space):
    every = enumerate_students(space)
    assert len(every) == space.count_configurations() == 40
    assert len({c.key for c in every}) == 40


def test_sample_is_distinct_seeded_and_capped(space):
    a, b = sample_students(space, 12, seed=3), sample_students(space, 12, seed=3)
    assert [c.key for c in a] == [c.key for c in b] and len({c.key for c in a}) == 12
    assert len(sample_students(space, 500, seed=0)) == 40
    with pytest.raises(ConfigError):
        sample_students(space, 0)


def test_float_ranges_are_sampled_not_enumerated():
    sp = SearchSpace.from_dict({"student": [{"name": "vgg", "kwargs": {"width": {"low": 0.1, "high": 0.3}}}]})
    assert enumerate_students(sp) is None
    c = sample_students(sp, 5, seed=0)
    assert len(c) == 5 and all(0.1 <= x.kwargs["width"] <= 0.3 for x in c)


def test_mutation_changes_exactly_one_decision(space):
    rng = random.Random(0)
    for _ in range(100):
        parent = random_student(space, rng)
        child = mutate_student(space, parent, rng)
        assert child.key != parent.key
        if child.option == parent.option:
            assert sum(child.kwargs[k] != parent.kwargs[k] for k in parent.kwargs) == 1


def test_candidate_params_make_suggest_build_that_student(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for cand in sample_students(space, 8, seed=1):
        study.enqueue_trial(cand.params(space))
        trial = study.ask()
        recipe = space.suggest(trial)
        study.tell(trial, 0.0)
        assert recipe.student.name == cand.name and recipe.student.kwargs == cand.kwargs


def test_score_candidates_rows_and_csv(space, tmp_path):
    bundle = data.create("digits", seed=0, train_fraction=0.25)
    torch.manual_seed(0)
    teacher = models.create("cnn", 10, in_channels=1, width=8).eval()
    names = ["params", "naswot", "diswot"]
    rows = score_candidates({"data": bundle, "teacher": teacher}, space, n=4, proxies=names, seed=0,
                                    batch_size=32)
    again = score_candidates({"data": bundle, "teacher": teacher}, space, n=4, proxies=names, seed=0,
                                     batch_size=32)
    assert [r["diswot"] for r in rows] == [r["diswot"] for r in again]  # deterministic
    assert len(rows) == 4 and len({r["student"] for r in rows}) == 4
    for r in rows:
        assert isinstance(r["params"], int) and r["params"] > 0
        assert all(f"{n}_time_s" in r for n in names) and r["errors"] == {}
    ranked = rank_rows(rows, "naswot")
    assert [r["naswot"] for r in ranked] == sorted((r["naswot"] for r in rows), reverse=True)
    path = write_csv(rows, tmp_path / "scores.csv")
    with path.open() as fh:
        read = list(csv.DictReader(fh))
    assert [r["student"] for r in read] == [r["student"] for r in rows]
    assert json.loads(read[0]["kwargs"]) == rows[0]["kwargs"]
    with pytest.raises(ConfigError, match="teacher"):
        score_candidates({"data": bundle}, space, n=2, proxies=["diswot"])
