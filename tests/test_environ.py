"""``losslab.environ.scoped``: variables for a block only, restored (or unset again) afterwards, even on an error."""

import os
import subprocess
import sys

import pytest

from losslab import environ


def test_scoped_variables_reach_a_child_process_and_are_restored_after_the_block(monkeypatch):
    monkeypatch.setenv("LOSSLAB_TEST_KEPT", "before")
    monkeypatch.delenv("LOSSLAB_TEST_NEW", raising=False)
    with environ.scoped({"LOSSLAB_TEST_KEPT": "inside", "LOSSLAB_TEST_NEW": "1"}):
        seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ['LOSSLAB_TEST_KEPT'], "
                               "os.environ['LOSSLAB_TEST_NEW'])"], capture_output=True, text=True).stdout.split()
    assert seen == ["inside", "1"]
    assert os.environ["LOSSLAB_TEST_KEPT"] == "before" and "LOSSLAB_TEST_NEW" not in os.environ

    with pytest.raises(RuntimeError), environ.scoped({"LOSSLAB_TEST_NEW": "2"}):
        raise RuntimeError("the block fails")
    assert "LOSSLAB_TEST_NEW" not in os.environ
