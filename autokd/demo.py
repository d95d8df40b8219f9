"""``make demo``: the embedded-default study end to end — search, export, like-for-like retrain (the study's
``final.seeds`` seeds beside plain KD and CE-only), report."""

from __future__ import annotations

import sys
import time

from .cli import RichProgress, _clean, console, print_evidence


@_clean
def run(study_path: str) -> None:
    from .api import export_recipe, load_study_config, make_report, run_search, train_recipe

    t0 = time.time()
    cfg = load_study_config(study_path)
    console.rule(f"autokd demo: {cfg.name}")
    console.print(cfg.description or "", highlight=False, soft_wrap=True)
    with RichProgress(seeds=cfg.search.seeds_per_trial) as prog:
        run_search(cfg, progress=prog, log=console.print)
    t_search = time.time() - t0
    recipe = export_recipe(cfg)
    console.rule(f"retraining the best recipe beside plain KD and CE-only ({cfg.final.seeds} seeds, test split)")
    res = train_recipe(recipe, study=cfg, log=lambda m: console.print(m, highlight=False, markup=False,
                                                                         soft_wrap=True))
    t_final = time.time() - t0 - t_search
    report = make_report(cfg)
    print_evidence({**res.to_json(), "_path": str(res.path)},
                   next_steps=[f"open {report}", f"autokd trials {study_path} --format csv -o trials.csv",
                               f"autokd status {study_path}", f"optuna-dashboard {cfg.storage_url}"])
    console.print(f"best recipe   : {recipe}", highlight=False, soft_wrap=True)
    console.print(f"teacher       : {cfg.study_dir / 'teacher.pt'}", highlight=False, soft_wrap=True)
    console.print(f"wall time     : {time.time() - t0:.0f}s (search {t_search:.0f}s, retrain {t_final:.0f}s)",
                  highlight=False)


def main() -> None:
    run(sys.argv[1] if len(sys.argv) > 1 else "studies/digits.yaml")


if __name__ == "__main__":
    main()
