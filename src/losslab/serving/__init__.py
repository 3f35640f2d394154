"""Serving: a trained model as plain files (``bundle``), predictions from the command line
(``predict``), the MLflow pyfunc (``pyfunc_model``) and the model registry (``registry``)."""
