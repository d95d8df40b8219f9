"""Search backends: Optuna (embedded default) and Ray Tune (scale-out)."""
