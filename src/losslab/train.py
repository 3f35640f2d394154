"""``python -m losslab.train [overrides]``: the short name of ``python -m losslab.training`` (``make train``)."""

from losslab.training.train import main

if __name__ == "__main__":
    main()
