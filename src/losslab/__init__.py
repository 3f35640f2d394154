"""losslab: compare the loss functions of a neural-networks course on a real text-classification task.

Data flow, one module each: data → text → features → batches → model / losses / targets →
metrics → module (LightningModule) → tracking → bundle (saved model) → train / predict.
"""

__version__ = "0.1.0"
