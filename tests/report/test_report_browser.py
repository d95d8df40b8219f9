"""A real browser opens a demo-sized report: no console or page error, every figure drawn, the headline equal
to final/results.json, the tables' own script sorting. Runs with Chromium (Debian's ``chromium``) through
Playwright's Python package; skipped with the reason outside CI when either is missing (CI installs both)."""

from __future__ import annotations

import os
import shutil

import pytest
from report_studies import demo_sized_study

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)


def _require():
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("CI must provide Chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium); CI runs this test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("CI must provide playwright (the dev extra)")
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


FINAL = {
    "seeds": [0, 1, 2, 3, 4], "sizes": {"train": 314, "val": 360, "test": 540},
    "test_acc": {"recipe": [0.913, 0.92, 0.9, 0.911, 0.93], "kd": [0.9, 0.9, 0.9, 0.9, 0.92],
                 "ce_only": [0.85, 0.86, 0.84, 0.85, 0.86]},
    "fidelity": {k: {"agreement": [0.9, 0.92], "kl": [0.2, 0.3]} for k in ("recipe", "kd", "ce_only")},
    "description": "cnn(width=3): 0.1·CE + 0.9·kd(temperature=6) [dlb]",
}


def test_report_renders_in_chromium(tmp_path):
    sync_playwright = _require()
    from autokd.report import build_report, data
    from autokd.stats import paired_difference

    path = build_report(demo_sized_study(), tmp_path / "report.html", final=FINAL)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                                          "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(500)
            figs = page.eval_on_selector_all(
                "div[id^=fig-]",
                "els => els.map(e => [e.id, e.closest('section').id, e.querySelectorAll('.main-svg').length,"
                " e.getBoundingClientRect().height])")
            sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            recipe_mean = page.inner_text('#evidence-table tr[data-run="recipe"] .acc-mean')
            kd_diff = page.inner_text('#comparison-table tr[data-vs="kd"] .diff-mean')
            kd_ci = page.inner_text('#comparison-table tr[data-vs="kd"] .ci')
            page.click("#leaderboard-table th:nth-child(2)")  # sort by trial number, ascending
            order = page.eval_on_selector_all("#leaderboard-table tbody tr td:nth-child(2)",
                                              "tds => tds.map(t => Number(t.textContent))")
        finally:
            browser.close()
    assert not errors, errors
    drawn = {sec for _, sec, n, h in figs if n > 0 and h > 0}
    undrawn = [(fid, n, h) for fid, _, n, h in figs if not (n > 0 and h > 0)]
    assert not undrawn, undrawn
    figure_sections = {"kd", "history", "intermediate", "parallel", "importances", "optuna", "pareto"}
    assert figure_sections <= set(sections) and figure_sections <= drawn
    ev = data.evidence(FINAL)
    assert recipe_mean == f"{ev['runs'][0]['mean']:.2f}"
    d = paired_difference(FINAL["test_acc"]["recipe"], FINAL["test_acc"]["kd"])
    assert kd_diff == f"{100 * d['mean']:+.2f}" and kd_ci == f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"
    assert order == sorted(order) and len(order) > 10
