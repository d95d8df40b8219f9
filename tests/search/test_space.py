from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from autokd import Distiller, models
from autokd.errors import ConfigError
from autokd.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def _untrained_helper(name, kwargs=None, epochs=None):
    """An extra teacher (CiT's involution teacher) at its initialisation: enough to build and run the loss."""
    return models.create(name, 10, in_channels=1, **(kwargs or {})).eval()


#: spaces written for a transformer teacher (their relation methods need the teacher's attention)
VIT_TEACHER_SPACES = {"vit_relations.yaml"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_sample_runnable_recipes(path):
    """100 random suggestions all build into runnable recipes: student + losses + connectors do a
    forward/backward on a small batch."""
    space = SearchSpace.load(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    if path.name in VIT_TEACHER_SPACES:
        teacher = models.create("vit", 10, in_channels=1, patch_size=2, depth=3, width=32, heads=4, img_size=8)
    else:
        teacher = models.create("cnn", 10, in_channels=1, width=8)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    seen = set()
    for _ in range(100):
        trial = study.ask()
        recipe = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.add(tuple(sorted(trial.params.items())))
        assert set(trial.params) <= set(space.parameters())
        student = models.from_spec(recipe.student, 10, 1)
        d = Distiller(teacher, student, recipe, input_shape=(1, 8, 8),
                      context={"num_samples": 8, "helper_teacher": _untrained_helper})
        out = d(x, y, index=torch.arange(8))
        out["loss"].backward()
        assert torch.isfinite(out["loss"]), recipe.describe()
    assert len(seen) >= min(20, space.count_configurations())


def test_conditional_parameters_only_when_parent_chosen():
    space = SearchSpace.from_dict({
        "student": ["cnn_w2", {"name": "cnn", "kwargs": {"width": [3, 4]}}],
        "terms": [{"loss": "kd", "optional": True, "weight": {"low": 0.1, "high": 1, "log": True},
                   "params": {"temperature": {"low": 1, "high": 8}}}],
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        t = study.ask()
        r = space.suggest(t)
        study.tell(t, 0.0)
        used = t.params["terms.0.use"]
        assert ("terms.0.kd.temperature" in t.params) == used == bool(r.terms)
        assert ("student.cnn.width" in t.params) == (t.params["student"] == "cnn")


def test_parameter_names_are_stable_across_processes():
    code = ("import optuna;from autokd.search.space import SearchSpace;"
            f"s=SearchSpace.load(r'{ROOT / 'search_spaces' / 'digits.yaml'}');"
            "st=optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3));t=st.ask();s.suggest(t);"
            "print(sorted(t.params.items()))")
    a = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    b = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert a == b and "terms.0.loss" in a and "optim.lr" in a


S = {"student": ["cnn_w2"]}
BAD = [
    ({"student": []}, "student: empty choice list"),
    ({"student": ["cnn_w44"]}, "unknown model 'cnn_w44'"),
    ({"student": [{"name": "cnn", "kwargs": {"widht": 2}}]}, "kwargs.widht: model 'cnn' has no parameter 'widht'"),
    ({"student": [{"name": "cnn", "kwargs": {"width": 2}}, {"name": "cnn", "kwargs": {"width": 2}}]}, "duplicate"),
    ({**S, "terms": [{"loss": "kdd"}]}, "did you mean 'kd'"),
    ({**S, "terms": [{"loss": "kd", "params": {"temp": 3}}]}, "no hyper-parameter 'temp'"),
    ({**S, "terms": [{"loss": "kd", "params": {"temperature": "hot"}}]}, "temperature must be a number"),
    ({**S, "ce_weight": {"low": 1, "high": 0.1}}, "inverted range"),
    ({**S, "ce_weight": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
    ({**S, "ce_weight": -1}, "ce_weight: a weight must be >= 0, got -1"),
    ({**S, "optim": {"lrr": 0.1}}, "optim.lrr: unknown field"),
    ({**S, "optim": {"lr": -1.0}}, "optim.lr"),
    ({**S, "optim": {"batch_size": [32, 0]}}, "optim.batch_size"),
    ({**S, "scheme": "eskdd"}, "unknown scheme"),
    ({**S, "scheme": {"choices": {"standard": {"alpha": 1}}}},
     "scheme.standard.alpha: scheme 'standard' has no hyper-parameter 'alpha'"),
    ({**S, "terms": [{"loss": "kd", "weight": []}]}, "empty choice list"),
    ({**S, "terms": [{"loss": "kd", "weight": -0.5}]}, "terms.0.weight: a weight must be >= 0, got -0.5"),
    ({**S, "terms": [{"loss": "kd", "wieght": 1}]}, "wieght: unknown field"),
    ({**S, "terms": [{"loss": []}]}, "empty choice of losses"),
    ({**S, "terms": [{"loss": "kd", "pairs": "auto"}]}, "takes no layer pairs"),
    ({**S, "terms": {"pick": {"min": 3, "max": 1}, "from": ["kd"]}}, "min <= max"),
    ({**S, "terms": {"pick": {"min": 1, "max": 2}, "from": []}}, "terms.from: empty choice of losses"),
    ({**S, "terms": {"pick": {"min": 1}, "form": ["kd"]}}, "terms.form: unknown field; allowed: from, pick"),
    ({**S, "terms": {"pick": {"min": 1, "max": 1}, "from": {"kd": {"colour": 1}}}}, "kd.colour: unknown field"),
    ({**S, "colour": 1}, "colour: unknown field"),
    ({**S, "version": 2}, "unsupported version"),
    ({**S, "temperature": 0}, "temperature: a temperature must be > 0"),
    ({**S, "budget": {"epochs": 3}, "optim": {"epochs": 4}}, "given twice"),
    ({"terms": []}, "student: required"),
    ({**S, "ce_weight": {"low": 0.1}}, "a range needs low and high"),
    ({**S, "optim": {"lr": {"choices": []}}}, "empty choice list"),
    # non-finite numbers, anywhere
    ({**S, "ce_weight": {"low": 0.1, "high": math.inf}}, "ce_weight.high: must be a finite number, got inf"),
    ({**S, "temperature": {"low": math.nan, "high": 2}}, "temperature.low: must be a finite number, got nan"),
    ({**S, "ce_weight": math.nan}, "ce_weight: must be a finite number"),
    ({**S, "terms": [{"loss": "kd", "params": {"temperature": [2, math.inf]}}]},
     "terms.0.params.temperature.1: must be a finite number"),
    ({"student": [{"name": "cnn", "kwargs": {"width": {"low": 2, "high": math.inf, "int": True}}}]},
     "student.0.kwargs.width.high: must be a finite number"),
    ({**S, "optim": {"milestones": [0.5, math.nan]}}, "optim.milestones.1: must be a finite number"),
    ({**S, "terms": [{"loss": "at", "pairs": {"search": {"depths": [0.5, math.nan]}}}]},
     "terms.0.pairs.search.depths.1: must be a finite number"),
    # hyper-parameter validity (HParam.check) on fixed values, choices and both bounds of a range
    ({**S, "temperature": {"low": -5, "high": -1}, "terms": [{"loss": "kd"}]},
     "temperature: loss 'kd': temperature must be > 0, got -5.0"),
    ({**S, "temperature": {"low": -5, "high": -1}}, "temperature: a temperature must be > 0, got -5.0"),
    ({**S, "terms": [{"loss": "kd", "params": {"temperature": {"low": 0, "high": 4}}}]},
     "terms.0.params.temperature: loss 'kd': temperature must be > 0, got 0.0"),
    ({**S, "terms": {"pick": {"min": 1, "max": 1}, "from": {"kd": {"params": {"temperature": [2, -1]}}}}},
     "terms.from.kd.params.temperature: loss 'kd': temperature must be > 0, got -1.0"),
    ({**S, "terms": [{"loss": "kd", "weight": {"choices": [1, -1]}}]}, "terms.0.weight: a weight must be >= 0"),
    ({**S, "scheme": {"choices": {"dml": {"weight": {"low": -1, "high": 1}}}}},
     "scheme.dml.weight: scheme 'dml': weight must be > 0, got -1.0"),
    ({**S, "terms": [{"loss": "at", "pairs": {"search": {"depths": [0.5, 1.5]}}}]},
     "terms.0.pairs.search.depths.1: a relative depth must be in (0, 1], got 1.5"),
    ({**S, "terms": [{"loss": "at", "pairs": {"search": {"depths": [0.5], "max": 2}}}]},
     "terms.0.pairs.search.max: an integer in 1..1"),
    # where a term's settings were written
    ({**S, "terms": [{"loss": {"kd": {"temp": 3}}}]}, "terms.0.loss.kd.temp: loss 'kd' has no hyper-parameter"),
    ({**S, "terms": [{"loss": ["kd", "dkd"], "params": {"temperature": 3}}]},
     "terms.0.params: with a choice of losses, give params per loss"),
    ({**S, "terms": [{"loss": ["kd", "dkdd"]}]}, "terms.0.loss.1: unknown loss 'dkdd'"),
    ({**S, "terms": {"pick": {"min": 1}, "from": {"kdd": {}}}}, "terms.from.kdd: unknown loss 'kdd'"),
    # one shape at a time: a wrong shape is reported once, in words
    ({**S, "terms": 3}, "terms: expected a list of terms or {pick, from}, got 3"),
    ({**S, "terms": [{"loss": 3}]}, "terms.0.loss: expected a loss name, a list of names or a mapping"),
    ({**S, "terms": [{"loss": "at", "pairs": 3}]}, "terms.0.pairs: expected auto, a list of [teacher_stage"),
    ({**S, "terms": [{"loss": "at", "pairs": [[0, -1]]}]}, "terms.0.pairs.0.1: Input should be greater than or equal"),
    ({**S, "scheme": {"choices": {"dot": "defaults"}}}, "scheme.dot: Input should be 'default'"),
    ({**S, "ce_weight": {"low": 1, "high": 2, "lg": True}}, "ce_weight.lg: unknown field; allowed: high, int, log"),
    ({**S, "ce_weight": {"choices": [{"a": 1}]}}, "ce_weight.choices.0: expected a number, a string or a boolean"),
    ({**S, "terms": {"pick": {"min": True}, "from": ["kd"]}}, "terms.pick.min: Input should be a valid integer"),
]


@pytest.mark.parametrize("d, match", BAD, ids=[m for _, m in BAD])
def test_invalid_spaces_fail_at_load_with_one_line(d, match):
    with pytest.raises(ConfigError, match=re.escape(match)) as e:
        SearchSpace.from_dict(d, source="bad.yaml")
    msg = str(e.value)
    assert msg.startswith("bad.yaml: ") and "\n" not in msg
    assert "more)" not in msg, "one mistake, one error: no union-branch noise"


def test_invalid_catalogue_is_large_enough():
    assert len(BAD) >= 50


def test_malformed_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("student: [cnn_w2\nterms: {")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML \(line"):
        SearchSpace.load(p)


@pytest.mark.parametrize("text, match", [
    ("student: cnn_w2\nce_weight: {low: .nan, high: 1}\n", r"bad.yaml: ce_weight.low: must be a finite number, got nan"),
    ("student: cnn_w2\ntemperature: {low: 1, high: .inf}\n", r"bad.yaml: temperature.high: must be a finite number"),
    ("student: cnn_w2\nterms:\n  - {loss: kd, weight: -.inf}\n", r"bad.yaml: terms.0.weight: must be a finite number"),
    ("student: cnn_w2\nstudent: cnn_w4\n", r"bad.yaml: malformed YAML \(line 2, column 1: duplicate key 'student'"),
    ("student: cnn_w2\nterms:\n  - {loss: kd, loss: dkd}\n", r"bad.yaml: malformed YAML .*duplicate key 'loss'"),
])
def test_space_files_refused_at_load(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        SearchSpace.load(p)
    assert "\n" not in str(e.value)


def test_binary_space_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError, match=r"bad.yaml: not a text") as e:
        SearchSpace.load(p)
    assert "\n" not in str(e.value)


def test_pairs_out_of_range_for_the_study_models():
    from autokd.losses.base import LOSSES

    feature_losses = [n for n in LOSSES.names() if "feats" in LOSSES.get(n).needs and n != "generic"]
    name = feature_losses[0] if feature_losses else "generic"
    sp = SearchSpace.from_dict({"student": ["cnn_w2"], "terms": [{"loss": name, "pairs": [[0, 9]]}]},
                               source="s.yaml")
    teacher = models.create("cnn", 10, in_channels=1, width=8)
    with pytest.raises(ConfigError, match=r"s.yaml: terms.*pairs: \(0, 9\) out of range; the teacher has stages 0..2"):
        sp.check_models(models.shapes(teacher, (1, 8, 8)), 10, (1, 8, 8))


def test_space_file_schema_is_pydantic_and_documents_every_field():
    from autokd.search.space import SpaceFile

    schema = SpaceFile.model_json_schema(by_alias=True)
    props = schema["properties"]
    assert list(props) == ["version", "description", "student", "ce_weight", "temperature", "terms", "scheme",
                           "optim", "budget"]
    # values are documented in their YAML forms: a scalar, a list, {choices} or {low, high, log, int, step}
    forms = json.dumps(props["ce_weight"])
    assert '"type": "number"' in forms and "#/$defs/ChoicesSpec" in forms and "#/$defs/RangeSpec" in forms
    assert set(schema["$defs"]["RangeSpec"]["properties"]) == {"low", "high", "log", "int", "step"}
    assert "from" in schema["$defs"]["TermPickSpec"]["properties"]
    # structural mistakes the registries cannot see are caught by the schema
    with pytest.raises(ConfigError, match="optional"):
        SearchSpace.from_dict({"student": ["cnn_w2"], "terms": [{"loss": "kd", "optional": "maybe"}]},
                              source="s.yaml")
