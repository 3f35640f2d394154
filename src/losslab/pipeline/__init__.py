"""DVC pipeline stages (``dvc.yaml``): prepare → featurize → train@<loss> → evaluate@<loss> → compare.

Every stage reads its settings from ``params.yaml`` (composed from ``conf/`` by
``losslab.pipeline.params`` or by ``dvc exp run``), never from ``conf/`` itself, so
``dvc exp run -S key=value`` overrides are honoured.
"""
