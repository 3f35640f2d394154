"""``python -m losslab.sweeps <name> [--jobs N] [overrides]``: see ``losslab.sweeps.cli``."""

from losslab import quick_exit

quick_exit.install()  # before any import can register an exit handler

from losslab.sweeps.cli import main  # noqa: E402

main(worker_server=True)  # this process's workers fork from one that imports once (sweeps.worker_server)
quick_exit.finished()
