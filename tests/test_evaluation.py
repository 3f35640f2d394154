"""The run's test report: losslab's one-pass classification report equals scikit-learn's, text and numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import classification_report as sklearn_report

from losslab.training.evaluation import classification_report


@pytest.mark.parametrize("names, degenerate", [(["non_aggressive", "aggressive"], False), (["x", "y"], True),
                                               (["a", "bb", "a_very_long_class_name"], False)])
def test_classification_report_is_sklearns(names, degenerate):
    rng = np.random.default_rng(len(names))
    k = len(names)
    y = rng.integers(0, k, 300)
    predicted = np.zeros_like(y) if degenerate else rng.integers(0, k, 300)  # degenerate: one class never predicted
    if k == 3:
        y[y == 2] = 1  # a class with no true example: precision 0, recall 0 (zero_division=0), support 0
    text, as_dict = classification_report(y, predicted, names)
    options = dict(labels=list(range(k)), target_names=names, digits=4, zero_division=0)
    assert text == sklearn_report(y, predicted, **options)
    expected = sklearn_report(y, predicted, output_dict=True, **options)
    assert as_dict.keys() == expected.keys()
    assert math.isclose(as_dict["accuracy"], expected["accuracy"])
    for row in [*names, "macro avg", "weighted avg"]:
        for metric, value in expected[row].items():
            assert math.isclose(as_dict[row][metric], value, abs_tol=1e-12), (row, metric)
