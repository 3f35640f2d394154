"""``python -m losslab.training [overrides]``: train once (see ``losslab.training.train``)."""

from losslab.training.train import main

main()
