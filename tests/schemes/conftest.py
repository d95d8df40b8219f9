from __future__ import annotations

import pytest
import torch

from autokd import data
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.train import Trainer


@pytest.fixture(scope="session")
def bundle():
    return data.create("digits", train_fraction=0.2)


@pytest.fixture(scope="session")
def teacher(bundle):
    torch.manual_seed(0)
    r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}), optim=OptimSpec(epochs=2, batch_size=32))
    return Trainer(bundle, device="cpu").fit(r, measure=False).student.eval()


def _make_recipe(scheme="standard", params=None, epochs=1, width=2, ce_weight=0.1, terms=True, **optim):
    """A digits recipe: cnn(width) student, optionally 0.1 CE + 0.9 KD (T=4), the given scheme."""
    kd = [TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})] if terms else []
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": width, **optim.pop("kwargs", {})}),
                  ce_weight=ce_weight, terms=kd, scheme=SchemeSpec(name=scheme, params=params or {}),
                  optim=OptimSpec(epochs=epochs, batch_size=optim.pop("batch_size", 32), **optim))


@pytest.fixture(scope="session")
def make_recipe():
    return _make_recipe


@pytest.fixture
def count_fits(monkeypatch):
    """The student label of every Trainer.fit call, in call order (helpers trained by schemes included)."""
    calls = []
    orig = Trainer.fit

    def fit(self, recipe, **kw):
        calls.append(recipe.student.label())
        return orig(self, recipe, **kw)

    monkeypatch.setattr(Trainer, "fit", fit)
    return calls
