"""``python -m losslab [<command> [args]]``: list the entry points, or run one (``python -m losslab sweep quick``).

Kept import-light so the listing answers at once: a command's module is imported only when it runs.
"""

from __future__ import annotations

import sys

# command -> (module run as ``python -m <module>``, what it does and an example)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("losslab.train", "train once with Hydra overrides: python -m losslab.train loss=mse"),
    "sweep": ("losslab.sweeps", "every loss over seeds + report: python -m losslab.sweeps losses --jobs 2"),
    "report": ("losslab.report", "a sweep's statistical report from the store: python -m losslab.report"),
    "predict": ("losslab.serving.predict",
                "classify texts with a logged model: python -m losslab.serving.predict --run <id> --text '...'"),
    "registry": ("losslab.serving.registry",
                 "best sweep run -> models:/<name>@champion, and serve it: python -m losslab.serving.registry "
                 "register|serve"),
    "ui": ("losslab.ops.ui", "MLflow UI on the project store: python -m losslab.ops.ui --port 5000"),
    "server": ("losslab.ops.server",
               "MLflow server on PostgreSQL under .run/: python -m losslab.ops.server start|stop|status"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        import runpy

        module = COMMANDS[argv[0]][0]
        sys.argv = [module, *argv[1:]]
        runpy.run_module(module, run_name="__main__")
        return 0
    print("usage: python -m losslab <command> [args]\n\ncommands:")
    for name, (_, help_text) in COMMANDS.items():
        print(f"  {name:<9} {help_text}")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
