"""Model: the PReLU MLP (``network``), the losses and their targets (``losses``, ``targets``),
the metrics (``metrics``) and the LightningModule that ties them together (``module``)."""
