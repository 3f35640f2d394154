"""Training: one run end to end (``train``: data → model → Lightning fit → test → MLflow),
its Lightning callbacks and logger (``callbacks``) and the test-set artifacts (``evaluation``)."""
