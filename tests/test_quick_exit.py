"""losslab.quick_exit: a finished command skips the interpreter's teardown, after every exit handler has run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A command as the entry points are written: install() first, then a library registers its own exit handler
# (here: one that appends to a file), a module-level object reports its teardown (its __del__), the last line
# has no newline (still in the buffer), and the command ends with finished() or with an exit status.
COMMAND = textwrap.dedent("""
    import atexit, os, sys
    from losslab import quick_exit

    log = sys.argv[1]
    if sys.argv[3:] == ["earlier"]:  # a tool's handler registered before install() (coverage run does that)
        atexit.register(lambda: open(log, "a").write("earlier "))
    quick_exit.install()

    def library_handler():
        with open(log, "a") as f:
            f.write("handler ")

    atexit.register(library_handler)

    class Global:  # keeps what it needs: module globals may be gone when the teardown reaches it
        def __init__(self):
            self.fd, self.write = os.open(log, os.O_WRONLY | os.O_APPEND), os.write

        def __del__(self):
            self.write(self.fd, b"teardown ")

    KEPT = Global()
    print("last line", end="")
    if sys.argv[2] == "finished":
        quick_exit.finished()
    else:
        sys.exit(int(sys.argv[2]))
""")


def run(tmp_path: Path, ending: str, *extra: str, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "log.txt"
    log.write_text("")
    done = subprocess.run([sys.executable, "-c", COMMAND, str(log), ending, *extra], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    return done, log.read_text()


def test_a_finished_command_runs_every_exit_handler_flushes_its_output_and_skips_the_teardown(tmp_path: Path) -> None:
    done, log = run(tmp_path, "finished")
    assert done.returncode == 0
    assert done.stdout == "last line"
    assert log == "handler "


@pytest.mark.parametrize("status", [0, 3])
def test_an_exit_status_takes_the_usual_way_out(tmp_path: Path, status: int) -> None:
    done, log = run(tmp_path, str(status))
    assert done.returncode == status
    assert done.stdout == "last line"
    assert log == "handler teardown "


def test_losslab_full_exit_keeps_the_teardown(tmp_path: Path) -> None:
    done, log = run(tmp_path, "finished", LOSSLAB_FULL_EXIT="1")
    assert done.returncode == 0
    assert done.stdout == "last line"
    assert log == "handler teardown "


def test_an_exit_handler_registered_before_it_still_runs(tmp_path: Path) -> None:
    done, log = run(tmp_path, "finished", "earlier")
    assert done.returncode == 0
    assert done.stdout == "last line"
    assert log == "handler earlier teardown "  # every exit handler, then the teardown


ENTRY_POINTS = {"losslab.train": "train.py", "losslab.training": "training/__main__.py",
                "losslab.sweeps": "sweeps/__main__.py", "losslab.report": "report/__main__.py"}


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_entry_points_install_it_before_any_exit_handler_is_registered(module: str) -> None:
    """What an entry module runs before ``install()`` registers no exit handler (one that did would run after the
    quick exit: never), and it says ``finished()`` after ``main()``."""
    import losslab

    source = (Path(losslab.__file__).parent / ENTRY_POINTS[module]).read_text()
    assert source.index("quick_exit.install()") < source.rindex("main(") < source.index("quick_exit.finished()")
    line_start = source.rindex("\n", 0, source.index("quick_exit.install()")) + 1
    indent = source[line_start:source.index("quick_exit.install()")]
    before = source[:line_start] + indent + "pass\n"  # inside `if __name__ == "__main__":` too
    probe = (f"import atexit\nexec(compile({before!r}, 'entry', 'exec'), {{'__name__': 'probe'}})\n"
             "print(atexit._ncallbacks())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
