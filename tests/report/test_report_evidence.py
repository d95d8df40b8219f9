"""The evidence headline (final/results.json), the KD rows, the per-trial rows / DataFrame and Optuna's views
on the searched trials, against hand computations on small studies."""

from __future__ import annotations

import json
import math

import pytest
from report_studies import recipe_study

from autokd.report import data

# 5 paired seeds; hand computation of recipe - KD: diffs 1, 2, 0, 1, 1 (points) -> mean 1, sd sqrt(0.5)
FINAL = {
    "seeds": [0, 1, 2, 3, 4],
    "sizes": {"train": 314, "val": 360, "test": 540},
    "test_acc": {"recipe": [0.91, 0.92, 0.90, 0.91, 0.93], "kd": [0.90, 0.90, 0.90, 0.90, 0.92],
                 "ce_only": [0.85, 0.86, 0.84, 0.85, 0.86]},
    "fidelity": {"recipe": {"agreement": [0.95, 0.97], "kl": [0.10, 0.12]}},
    "description": "cnn(width=2): 0.1·CE + 0.9·dkd(temperature=2) [standard]",
}


def test_evidence_from_an_older_results_file_computes_the_paired_interval():
    ev = data.evidence(FINAL)
    runs = {r["label"]: r for r in ev["runs"]}
    assert runs["recipe"]["mean"] == pytest.approx(91.4) and runs["recipe"]["n"] == 5
    assert runs["kd"]["std"] == pytest.approx(100 * math.sqrt(sum((x - 0.904) ** 2 for x in FINAL["test_acc"]["kd"]) / 4))
    assert runs["recipe"]["agreement"] == pytest.approx(0.96) and runs["recipe"]["kl"] == pytest.approx(0.11)
    kd = next(c for c in ev["comparisons"] if c["label"] == "kd")
    half = 2.7764451052 * math.sqrt(0.5) / math.sqrt(5)  # t_{0.975,4} · sd / sqrt(n), points
    assert kd["mean"] == pytest.approx(1.0) and kd["low"] == pytest.approx(1 - half)
    assert kd["high"] == pytest.approx(1 + half) and kd["verdict"] == "better than KD"
    assert ev["headline"] == "better than KD"
    assert ev["test_point"] == pytest.approx(100 / 540)


def test_load_final_reads_the_study_folder(tmp_path):
    assert data.load_final(tmp_path) is None
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "results.json").write_text(json.dumps(FINAL))
    assert data.load_final(tmp_path)["seeds"] == FINAL["seeds"]
    (tmp_path / "final" / "results.json").write_text("{not json")
    assert data.load_final(tmp_path) is None


def test_kd_rows_family_from_the_loss_registry_and_gains_per_student():
    rows = {r["number"]: r for r in data.kd_rows(recipe_study())}
    assert sorted(rows) == [4, 5, 6, 7, 9]  # completed searched trials only
    assert rows[4]["family"] == "logit" and rows[6]["family"] == "feature"
    assert rows[4]["gain_vs_kd"] == pytest.approx(2.0) and rows[4]["gain_vs_ce"] == pytest.approx(5.0)
    assert rows[5]["gain_vs_kd"] == pytest.approx(2.0) and rows[6]["gain_vs_kd"] == pytest.approx(-4.0)
    assert rows[7]["scheme"] == "dlb" and rows[7]["temperature"] == 8.0 and rows[7]["student"] == "cnn(width=2)"


def test_trial_rows_and_dataframe_match_the_study():
    pd = pytest.importorskip("pandas")
    import autokd

    study = recipe_study()
    rows = data.trial_rows(study)
    assert [r["number"] for r in rows] == list(range(10))
    assert [r["baseline"] for r in rows[:4]] == ["ce_only", "kd", "ce_only", "kd"]
    assert rows[8]["state"] == "PRUNED" and rows[8]["reason"] == "pruned at epoch 1" and rows[8]["gain_vs_kd_pts"] is None
    assert rows[9]["gain_vs_kd_pts"] == pytest.approx(-2.0) and rows[9]["losses"] == "fitnet"
    assert rows[1]["description"] == "cnn(width=2): 0.1·CE + 0.9·kd(temperature=4) [standard]"
    df = autokd.trials_dataframe(study)
    assert isinstance(df, pd.DataFrame) and len(df) == len(study.trials)
    assert list(df.columns[:len(data.COLUMNS)]) == list(data.COLUMNS)
    assert df.loc[5, "family"] == "logit" and df.loc[5, "gain_vs_kd_pts"] == pytest.approx(2.0)
    assert df["value"].max() == pytest.approx(max(t.value for t in study.trials if t.value is not None))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_views_work_on_the_searched_trials():
    pytest.importorskip("plotly")
    import optuna

    study = recipe_study()
    searched = data.searched_study(study)
    assert len(searched.trials) == 6 and all(t.params for t in searched.trials)
    imp = data.importances(study)
    assert imp.reason is None and set(imp) <= {"loss", "temperature", "weight", "scheme"} and imp.n == 5
    fig = optuna.visualization.plot_terminator_improvement(data.searched_study(study, complete_only=True))
    assert len(fig.data) >= 1
    from autokd.report import kd_figures

    views = kd_figures.optuna_views(searched, list(imp)[:3])
    missing = {k: why for k, (f, why) in views.items() if f is None}
    assert not missing and {"slice", "edf", "rank", "timeline"} <= set(views)
    assert sum(k.startswith("contour:") for k in views) == 3


def test_report_headline_equals_the_results_file(tmp_path):
    pytest.importorskip("plotly")
    from autokd.report import build_report

    text = build_report(recipe_study(), tmp_path / "r.html", final=FINAL).read_text(encoding="utf-8")
    head = text.split('<section id="evidence">', 1)[1].split("</section>", 1)[0]
    assert "91.40</span> ± " in head and "better than KD" in head and "one test image = 0.19 points" in head
    assert "cnn(width=2): 0.1·CE + 0.9·dkd(temperature=2) [standard]" in head
    assert "trained with the space&#x27;s default optimiser" in head
    assert text.index('id="evidence"') < text.index('id="summary"')
    none = build_report(recipe_study(), tmp_path / "n.html", command="autokd train best.yaml --study s.yaml")
    head = none.read_text(encoding="utf-8").split('<section id="evidence">', 1)[1].split("</section>", 1)[0]
    assert "No like-for-like retrain yet" in head and "autokd train best.yaml --study s.yaml" in head
    assert "cnn(width=3): 0.1·CE + 0.9·kd(temperature=6) [dlb]" in head  # best searched trial's recipe


# the baselines again with the space's default optimiser: KD's twin stronger (diffs 0, 1, -1, 0, 0 -> mean 0),
# CE-only's twin weaker than CE-only
TWINS = {**FINAL, "test_acc": {**FINAL["test_acc"], "kd_default_optim": [0.91, 0.91, 0.91, 0.91, 0.93],
                               "ce_only_default_optim": [0.84, 0.85, 0.83, 0.84, 0.85]}}


def test_a_baseline_stronger_with_the_default_optimiser_becomes_the_headline():
    ev = data.evidence(TWINS)
    assert [r["label"] for r in ev["runs"]] == ["recipe", "kd", "kd_default_optim", "ce_only",
                                               "ce_only_default_optim"]
    twin = next(c for c in ev["comparisons"] if c["label"] == "kd_default_optim")
    assert twin["mean"] == pytest.approx(0.0) and twin["verdict"] == "within noise"
    (stronger,) = ev["stronger"]  # CE-only's twin scored lower: the like-for-like CE-only stands
    assert stronger["baseline"] == "kd" and stronger["like_for_like"] == pytest.approx(90.4)
    assert stronger["default_optim"] == pytest.approx(91.4) and stronger["gain"] is twin
    assert ev["headline"] == twin["verdict"]  # not "better than KD": that KD was undertrained
    note = data.stronger_note(stronger)
    assert "90.40 %" in note and "91.40 %" in note and "+0.00 points" in note


def test_the_stronger_baseline_is_shown_in_the_report(tmp_path):
    pytest.importorskip("plotly")
    from autokd.report import build_report

    text = build_report(recipe_study(), tmp_path / "r.html", final=TWINS).read_text(encoding="utf-8")
    head = text.split('<section id="evidence">', 1)[1].split("</section>", 1)[0]
    assert 'data-stronger="kd"' in head and 'data-stronger="ce_only"' not in head
    assert 'data-vs="kd_default_optim"' in head and "plain KD, space&#x27;s default optimiser" in head
    assert data.evidence(FINAL)["stronger"] == []  # an older file: no twins, nothing changes
