"""The served model: an MLflow pyfunc that takes raw texts and returns the class and its probabilities.

Logged with MLflow's "models from code" (``python_model=<this file>``): loading it runs this
file and reads the losslab bundle (JSON + ``.npz`` + a weights-only state dict) through
``losslab.serving.bundle.Predictor`` — no pickled object anywhere. ``losslab.serving.registry`` logs it once,
for the run it registers, with the run's ``model/`` bundle as the artifact ``bundle``.

Input: a DataFrame with a ``text`` column (or a single column), a list of strings, or one string.
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
    """Raw texts from whatever the pyfunc was given (DataFrame, Series, array, list, str)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif model_input.shape[1] == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(f"expected a '{TEXT_COLUMN}' column, got columns {list(model_input.columns)}")
        values = column.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        values = list(model_input[TEXT_COLUMN])
    else:
        values = list(model_input.tolist() if hasattr(model_input, "tolist") else model_input)
    return ["" if v is None else str(v) for v in values]


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
