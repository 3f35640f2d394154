"""``python -m losslab.sweeps <name> [--jobs N] [overrides]``: see ``losslab.sweeps.cli``."""

from losslab.sweeps.cli import main

main()
