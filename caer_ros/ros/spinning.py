"""Spinning an executor until a condition holds: shared by the demo driver and the node tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def spin_until(executor: Any, done: Callable[[], bool], timeout: float,
               process: subprocess.Popen | None = None, step: float = 0.05) -> bool:
    """Spin ``executor`` until ``done()`` (True), or ``timeout`` seconds pass or ``process``
    ends (then ``done()``'s last value)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            return done()
        executor.spin_once(timeout_sec=step)
    return True
