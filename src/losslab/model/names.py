"""Metric names, shared by training and the report without importing torch."""

from __future__ import annotations

import re


def metric_key(class_name: str) -> str:
    """A class name as it appears in metric names: ``f1_<class>`` with [A-Za-z0-9_] only."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(class_name)).strip("_") or "class"
