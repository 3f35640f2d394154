"""``python -m losslab.training [overrides]``: train once (see ``losslab.training.train``)."""

from losslab import quick_exit

quick_exit.install()  # before any import can register an exit handler

from losslab.training.train import main  # noqa: E402

main()
quick_exit.finished()
