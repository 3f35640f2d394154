"""``python -m losslab.train [overrides]``: the short name of ``python -m losslab.training`` (``make train``)."""

if __name__ == "__main__":
    from losslab import quick_exit

    quick_exit.install()  # before any import can register an exit handler

    from losslab.training.train import main

    main()
    quick_exit.finished()
