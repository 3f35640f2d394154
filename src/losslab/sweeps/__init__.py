"""Sweeps: many trainings under one MLflow parent run (``cli``, Hydra ``callbacks``), the Optuna
search (``search``), and the end of a sweep: report, parent closed, champion (``finish``)."""
