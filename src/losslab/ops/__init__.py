"""Ops: the team MLflow server on PostgreSQL (``server``, ``postgres``) and the MLflow UI (``ui``)."""
