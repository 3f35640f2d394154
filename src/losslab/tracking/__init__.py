"""Tracking: the MLflow store (``store``), one run per training (``runs``), sweep parent runs (``sweep_runs``)."""
