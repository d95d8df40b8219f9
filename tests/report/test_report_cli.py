"""``autokd status``, ``trials``, ``report`` and ``export`` on a stored study named by --storage/--study-name."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from report_studies import STUDY_ATTRS, make_study, recipe_study
from typer.testing import CliRunner

from autokd.cli import app

runner = CliRunner()


@pytest.fixture
def stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(recipe_study().trials, storage=url, **STUDY_ATTRS)
    return url


def test_status_json_and_text(stored):
    res = runner.invoke(app, ["status", "--storage", stored, "--study-name", "kd-test", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["n_trials"] == 10 and info["counts"]["complete"] == 9 and info["counts"]["pruned"] == 1
    assert info["baselines"] == 4 and info["best"]["number"] == 5
    assert info["best"]["gain_vs_kd_pts"] == pytest.approx(2.0) and info["best"]["gain_vs_ce_pts"] == pytest.approx(4.0)
    res = runner.invoke(app, ["status", "--storage", stored, "--study-name", "kd-test"])
    assert res.exit_code == 0 and "best so far: trial 5 val 0.9000 (+2.00 pts vs KD" in res.output


def test_trials_csv_json_and_table(stored, tmp_path):
    out = tmp_path / "t.csv"
    res = runner.invoke(app, ["trials", "--storage", stored, "--study-name", "kd-test", "--format", "csv",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10 and rows[6]["family"] == "feature" and float(rows[6]["gain_vs_kd_pts"]) == pytest.approx(-4)
    res = runner.invoke(app, ["trials", "--storage", stored, "--study-name", "kd-test", "--format", "json"])
    assert [r["number"] for r in json.loads(res.output)] == list(range(10))
    res = runner.invoke(app, ["trials", "--storage", stored, "--study-name", "kd-test"], terminal_width=200)
    assert res.exit_code == 0 and "pruned at epoch 1" in res.output


def test_report_and_export_from_storage(stored, tmp_path):
    res = runner.invoke(app, ["report", "--storage", stored, "--study-name", "kd-test", "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert 'id="evidence"' in (tmp_path / "r.html").read_text(encoding="utf-8")
    res = runner.invoke(app, ["export", "--storage", stored, "--study-name", "kd-test", "-o", str(tmp_path / "b.yaml")])
    assert res.exit_code == 0, res.output
    from autokd import Recipe

    assert Recipe.load(tmp_path / "b.yaml").describe() == "cnn(width=3): 0.1·CE + 0.9·kd(temperature=6) [dlb]"


def test_storage_options_are_checked(stored):
    res = runner.invoke(app, ["status", "--storage", stored])
    assert res.exit_code == 2 and "go together" in res.output
    res = runner.invoke(app, ["status", "--storage", stored, "--study-name", "nope"])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 2 and "name a study" in res.output


def test_help_version_and_status_do_not_import_torch(stored):
    for args in (["--help"], ["--version"], ["status", "--storage", stored, "--study-name", "kd-test"],
                 ["list", "losses", "--level", "logit"], ["list", "proxies", "--json"]):
        code = (f"import sys\nfrom autokd.cli import app\ntry:\n    app({args!r})\nexcept SystemExit as e:\n"
                "    assert not e.code, e.code\nprint('TORCH' if 'torch' in sys.modules else 'LIGHT')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "LIGHT", args
