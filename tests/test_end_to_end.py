"""One end-to-end smoke study on a digits subset: search (3 trials x 1 epoch) -> report -> export -> train."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
from typer.testing import CliRunner

from autokd import Recipe
from autokd.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_search_report_export_train(tmp_path):
    study = tmp_path / "smoke.yaml"
    study.write_text(f"""
name: smoke
seed: 0
device: cpu
data: {{name: digits, train_fraction: 0.2, val_fraction: 0.2, test_fraction: 0.3}}
teacher: {{name: cnn, kwargs: {{width: 8}}, epochs: 2}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search: {{sampler: tpe, pruner: median, trials: 3, epochs: 1}}
final: {{seeds: 2, epochs: 1}}
""")
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(study)])
    assert res.exit_code == 0, res.output
    out_dir = tmp_path / "smoke"
    db = out_dir / "study.db"
    assert db.is_file() and (out_dir / "teacher.pt").is_file() and (out_dir / "best_recipe.yaml").is_file()
    # a plain Optuna RDB: optuna (and so optuna-dashboard) opens it
    st = optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}")
    # baselines (CE-only, KD) for each of the space's 2 students, then 3 searched trials
    assert len(st.trials) == 7
    kinds = sorted(t.user_attrs.get("baseline") or "searched" for t in st.trials)
    assert kinds == ["ce_only"] * 2 + ["kd"] * 2 + ["searched"] * 3
    students = {t.user_attrs["student"] for t in st.trials if t.user_attrs.get("baseline") == "kd"}
    assert students == {"cnn(width=2)", "cnn(width=3)"}
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0] == 7

    # rerunning the same command resumes: nothing new to do, nothing lost
    res = runner.invoke(app, ["search", str(study)])
    assert res.exit_code == 0, res.output
    assert len(optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}").trials) == 7
    # asking for more trials adds exactly that many
    res = runner.invoke(app, ["search", str(study), "--trials", "4"])
    assert res.exit_code == 0, res.output
    assert len(optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}").trials) == 8

    res = runner.invoke(app, ["report", str(study)])
    assert res.exit_code == 0, res.output
    html = (out_dir / "report.html").read_text()
    assert "<html" in html.lower() and "<script src=" not in html  # plotly.js inline, opens offline

    res = runner.invoke(app, ["export", str(study), "-o", str(tmp_path / "best.yaml")])
    assert res.exit_code == 0, res.output
    recipe = Recipe.load(tmp_path / "best.yaml")
    best = max((t for t in st.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert recipe.provenance.study == "smoke" and recipe.provenance.metrics["val_acc"] >= best.value - 1e-12

    res = runner.invoke(app, ["train", str(tmp_path / "best.yaml"), "--seeds", "2"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "CE-only" in res.output and "plain KD" in res.output and "best recipe" in res.output
    assert "recipe − KD" in res.output and "paired difference" in res.output
    import json

    from autokd.stats import paired_difference

    final = json.loads((out_dir / "final" / "results.json").read_text())
    acc = final["test_acc"]
    assert len(acc["recipe"]) == len(acc["kd"]) == 2
    # the comparison the report and the CLI show is the paired interval of the per-seed accuracies
    assert final["comparison"]["recipe_vs_kd"] == paired_difference(acc["recipe"], acc["kd"], baseline="KD")
    # the baselines are also trained with the space's default optimiser (same epochs) when the recipe's differs
    from autokd.retrain import with_optimiser
    from autokd.search import SearchSpace

    default = with_optimiser(recipe, SearchSpace.load(ROOT / "search_spaces" / "digits.yaml").default_optim()).optim
    twins = {"kd_default_optim", "ce_only_default_optim"} if default != recipe.optim else set()
    assert set(final["fidelity"]) == {"recipe", "kd", "ce_only"} | twins
    for twin in twins:
        assert final["recipes"][twin]["optim"] == {**default.model_dump(mode="json"), "epochs": 1}  # --epochs 1
        assert final["comparison"][f"recipe_vs_{twin}"]["n"] == 2
    assert all(0 <= a <= 1 for a in final["fidelity"]["kd"]["agreement"]) and final["fidelity"]["kd"]["kl"][0] >= 0
    assert final["sizes"]["test"] > 0
    res = runner.invoke(app, ["report", str(study)])
    html = (out_dir / "report.html").read_text()
    assert "No like-for-like retrain yet" not in html and 'id="evidence-table"' in html
