"""The served model: an MLflow pyfunc that takes raw texts and returns the class and its probabilities.

Logged with MLflow's "models from code" (``python_model=<this file>``): loading it runs this
file and reads the losslab bundle (JSON + ``.npz`` + a weights-only state dict) through
``losslab.serving.bundle.Predictor`` — no pickled object anywhere. ``losslab.serving.registry`` logs it once,
for the run it registers, with the run's ``model/`` bundle as the artifact ``bundle`` (one network, or an
ensemble bundle whose members' probabilities are averaged: the same input and output).

Input: a DataFrame with a ``text`` column (or a single column), a list of strings, or one string;
anything else (numbers, nested lists or objects) → ``MlflowException`` INVALID_PARAMETER_VALUE (HTTP 400).
Output: a DataFrame, one row per text: ``class`` and ``p_<class name>`` for every class.
Over HTTP (``mlflow models serve``)::

    POST /invocations  {"dataframe_records": [{"text": "eres un pendejo"}, {"text": "gracias amigos"}]}
    → {"predictions": [{"class": "aggressive", "p_non_aggressive": 0.08, "p_aggressive": 0.92}, ...]}
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


BUNDLE_ARTIFACT = "bundle"
TEXT_COLUMN = "text"


def texts_of(model_input: Any) -> list[str]:
    """Raw texts from whatever the pyfunc was given (DataFrame, Series, array, list, str).

    Anything that is not text — a number, a boolean, a nested list or object — is refused with
    MLflow's ``MlflowException`` (``INVALID_PARAMETER_VALUE``), which ``mlflow models serve`` answers
    with HTTP 400 and this one-line reason, instead of classifying ``str(5)``. A missing value
    (None/NaN) is an empty text.
    """
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif model_input.shape[1] == 1:
            column = model_input.iloc[:, 0]
        else:
            raise bad_input(f"expected a '{TEXT_COLUMN}' column (or a single column of texts), got columns "
                            f"{[str(c) for c in model_input.columns]}")
        values = column.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        values = model_input[TEXT_COLUMN]
        values = [values] if isinstance(values, str) else list(values)
    elif isinstance(model_input, (list, tuple, pd.Series)) or hasattr(model_input, "tolist"):
        values = list(model_input.tolist() if hasattr(model_input, "tolist") else model_input)
    else:
        raise bad_input(f"expected texts (a string or a list of strings), got {type(model_input).__name__}")
    return [_text(value, row) for row, value in enumerate(values)]


def _text(value: Any, row: int) -> str:
    import math

    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays as plain Python values
        value = value.tolist()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    kind = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, (int, float, complex))
            else "a list" if isinstance(value, (list, tuple)) else "an object" if isinstance(value, dict)
            else f"a {type(value).__name__}")
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise bad_input(f"expected texts (strings), got {kind} at row {row}: {shown}")


def bad_input(reason: str) -> Exception:
    """MLflow's own exception for a bad request: the scoring server turns it into HTTP 400 with ``reason``."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(" ".join(reason.split()), error_code=INVALID_PARAMETER_VALUE)


class TextClassifierModel(PythonModel):
    """Normalise → featurize → network → probabilities, exactly as in training (``Predictor``)."""

    # The input schema is the explicit signature logged with the model (a column of strings), not type
    # hints; MLflow's own switch for that (its warning ignores warning filters).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from losslab.serving.bundle import Predictor

        self.predictor = Predictor.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        return self.predictor.predict_table(texts_of(model_input))


mlflow.models.set_model(TextClassifierModel())
