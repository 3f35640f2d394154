"""Environment variables set for a block of code only (what the processes started in it inherit), then restored."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping


@contextlib.contextmanager
def scoped(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` inside the block; afterwards each variable as it was (unset if it was)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
