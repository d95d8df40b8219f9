from __future__ import annotations

import pytest
import torch

from autokd import Distiller, Recipe, models
from autokd.errors import ConfigError
from autokd.recipe import OptimSpec, StudentSpec, TermSpec
from autokd.train import check_recipe


def _recipe():
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": 4}), ce_weight=0.1,
                  terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 3.0})],
                  optim=OptimSpec(lr=0.1, epochs=3), seed=7)


def test_yaml_round_trip(tmp_path):
    r = _recipe()
    r.provenance.study = "s"
    r.provenance.metrics = {"val_acc": 0.9}
    p = r.dump(tmp_path / "r.yaml")
    back = Recipe.load(p)
    assert back == r
    assert back.to_dict() == r.to_dict()
    assert "schema_version: 1" in p.read_text()


def test_defaults_are_filled_in_and_validated():
    r = Recipe(student=StudentSpec(name="cnn"), terms=[TermSpec(loss="kd")])
    assert r.terms[0].params == {}  # pure data: the recipe holds what it was given
    assert check_recipe(r).terms[0].params == {"temperature": 4.0}
    with pytest.raises(ConfigError, match="did you mean 'kd'"):
        check_recipe(Recipe(student=StudentSpec(name="cnn"), terms=[TermSpec(loss="kdd")]))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        check_recipe(Recipe(student=StudentSpec(name="cnn"), terms=[TermSpec(loss="kd", params={"temperature": -3})]))
    with pytest.raises(ConfigError, match="unknown model"):
        check_recipe(Recipe(student=StudentSpec(name="cnn_w44")))


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"schema_version": 99}, "schema_version"),
        ({"ce_weight": -1}, "ce_weight"),
        ({"optim": {"lr": 0}}, "optim.lr"),
        ({"optim": {"name": "adam"}}, "optim.name"),
        ({"bogus": 1}, "bogus: unknown field"),
        ({"terms": [{"loss": "kd", "params": {"temp": 2}}]}, "no hyper-parameter 'temp'"),
        ({"terms": [{"loss": "kd", "weight": float("inf")}]}, "terms.0.weight"),
        ({"terms": [{"loss": "kd", "params": {"temperature": float("nan")}}]}, "finite"),
    ],
)
def test_bad_recipes_give_one_line_naming_the_field(patch, match):
    d = _recipe().to_dict()
    d.update(patch)
    with pytest.raises(ConfigError, match=match) as e:
        check_recipe(Recipe.from_dict(d, source="r.yaml"), source="r.yaml")
    assert "\n" not in str(e.value)


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("student: {name: cnn\nce_weight: [")
    with pytest.raises(ConfigError, match="malformed YAML"):
        Recipe.load(p)


def test_distiller_in_a_user_loop():
    torch.manual_seed(0)
    r = _recipe()
    teacher = models.create("cnn", 10, in_channels=1, width=8)
    student = models.from_spec(r.student, 10, 1)
    d = Distiller(teacher, student, r, input_shape=(1, 8, 8))
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    t_before = [p.clone() for p in teacher.parameters()]
    d.train()
    assert not teacher.training
    out = d(x, y)
    assert set(out) >= {"ce", "kd", "task", "distill", "loss"}
    assert torch.allclose(out["loss"], 0.1 * out["ce"] + 0.9 * out["kd"])
    first = float(out["loss"].detach())
    for _ in range(20):
        out = d(x, y)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(d(x, y)["loss"].detach()) < first
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters(), strict=True))
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(id(p) not in {id(q) for q in teacher.parameters()} for p in d.trainable_parameters())


def test_distiller_with_three_arguments_for_logit_recipes():
    r = _recipe()
    teacher = models.create("cnn", 10, in_channels=1, width=8)
    d = Distiller(teacher, models.from_spec(r.student, 10, 1), r)
    out = d(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    assert all(v.dim() == 0 for v in out.values())
    feat = Recipe.from_dict({**r.to_dict(), "terms": [{"loss": "at", "weight": 1.0}]})
    with pytest.raises(ConfigError, match="input_shape"):
        Distiller(teacher, models.from_spec(feat.student, 10, 1), feat)


def test_student_init_and_quantize_are_optional_pure_data(tmp_path):
    plain = _recipe()
    assert "init" not in plain.to_dict()["student"] and "quantize" not in plain.to_dict()["student"]
    r = Recipe.from_dict({"student": {"name": "cnn", "kwargs": {"width": 8}, "init": "net2net",
                                      "quantize": {"bits": 4}}})
    assert r.student.init.name == "net2net" and r.student.init.params == {} and r.student.quantize.bits == 4
    assert r.student.label() == "cnn(width=8)+net2net+int4"
    back = Recipe.load(r.dump(tmp_path / "r.yaml"))
    assert back == r and back.to_dict()["student"]["init"] == {"name": "net2net", "params": {}}
    for bad, match in [({"init": ""}, "init.name"), ({"init": {"name": "net2net", "noise": 1}}, "noise"),
                       ({"quantize": {"bits": 4, "act": 8}}, "act"),
                       ({"init": {"name": "net2net", "params": {"noise": float("nan")}}}, "finite")]:
        with pytest.raises(ConfigError, match=match):
            Recipe.from_dict({"student": {"name": "cnn", **bad}})


def test_to_yaml_is_the_text_of_yaml_safe_dump():
    """Recipe files are written with libyaml's emitter where PyYAML has it: the very text the pure-Python
    ``yaml.safe_dump`` writes, for every recipe a large space samples."""
    from pathlib import Path

    import optuna
    import yaml

    from autokd.search import SearchSpace

    space = SearchSpace.load(Path(__file__).resolve().parents[1] / "search_spaces" / "primitives.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    checked = 0
    for _ in range(60):
        trial = study.ask()
        try:
            recipe = space.suggest(trial)
        except ConfigError:
            continue
        assert recipe.to_yaml() == yaml.safe_dump(recipe.to_dict(), sort_keys=False)
        assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe
        checked += 1
    assert checked >= 30
