"""``python -m losslab``: list the entry points (kept import-light so it answers at once)."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "train once with Hydra overrides: python -m losslab.train loss=mse",
    "predict": "classify texts with a logged model: python -m losslab.serving.predict --run <id> --text '...'",
    "ui": "MLflow UI on the project store: python -m losslab.ops.ui --port 5000",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        import runpy

        sys.argv = [f"losslab.{argv[0]}", *argv[1:]]
        runpy.run_module(f"losslab.{argv[0]}", run_name="__main__")
        return 0
    print("usage: python -m losslab <command> [args]\n\ncommands:")
    for name, help_text in COMMANDS.items():
        print(f"  {name:<8} {help_text}")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
