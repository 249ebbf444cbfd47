"""Frame counters and the /diagnostics status (caer_ros/ros/diagnostics.py)."""

from __future__ import annotations

import math
import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from caer_ros.ros.diagnostics import FrameStats, diagnostic_status


def test_counts_rates_and_latency():
    stats = FrameStats()
    for _ in range(10):
        stats.received()
    for _ in range(3):
        stats.dropped()
    stats.bad()
    stats.processed(0.020)
    stats.processed(0.040)
    time.sleep(0.05)
    window = stats.window()
    assert (window.received, window.processed, window.dropped, window.bad, window.failed) == \
        (10, 2, 3, 1, 0)
    assert 0 < window.input_hz <= 10 / 0.05
    assert window.processing_hz == pytest.approx(window.input_hz / 5)
    assert window.latency_ms == 30.0 and window.max_latency_ms == 40.0
    assert window.new_bad == 1 and window.seconds_since_input < 1.0

    later = stats.window()  # a new window: totals stay, rates restart
    assert later.received == 10 and later.input_hz == 0 and math.isnan(later.latency_ms)
    assert later.new_bad == 0


def test_counters_are_thread_safe():
    stats = FrameStats()
    threads = [threading.Thread(target=lambda: [stats.received() for _ in range(2000)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.window().received == 8000


def test_status_levels_and_values():
    stats = FrameStats()
    status = diagnostic_status("emotion_node: people emotions", "onnxruntime:CPU", "/cam",
                               stats.window(), enabled=True)
    assert status.level == DiagnosticStatus.WARN
    assert "no image on /cam" in status.message
    stats.received()
    stats.processed(0.1)
    status = diagnostic_status("n", "torch:cpu", "/cam", stats.window(), enabled=False)
    assert status.level == DiagnosticStatus.OK and status.message == "active: paused (~/enable)"
    values = {kv.key: kv.value for kv in status.values}
    assert values["lifecycle_state"] == "active" and values["enabled"] == "false"
    assert values["backend"] == "torch:cpu" and status.hardware_id == "torch:cpu"
    assert values["frames_received"] == "1" and values["latency_ms"] == "100.0"
    for key in ("input_rate_hz", "processing_rate_hz", "frames_dropped", "frames_bad"):
        assert key in values
    stats.failed()
    status = diagnostic_status("n", "b", "/cam", stats.window(), enabled=True)
    assert status.level == DiagnosticStatus.WARN and "1 bad or failed frames" in status.message


def test_status_names_the_lifecycle_state():
    stats = FrameStats()  # no input ever: a warning only while active, the one state that reads
    window = stats.window()
    for state, message in (("unconfigured", "unconfigured: no model loaded"),
                           ("inactive", "inactive: not processing"),
                           ("finalized", "finalized: shut down")):
        status = diagnostic_status("n", "", "/cam", window, enabled=True, state=state)
        assert status.level == DiagnosticStatus.OK and status.message == message, state
        assert {kv.key: kv.value for kv in status.values}["lifecycle_state"] == state
    status = diagnostic_status("n", "b", "/cam", window, enabled=True, state="active")
    assert status.level == DiagnosticStatus.WARN
    assert status.message.startswith("active: running; no image on /cam")
    # A failed configure is an error while the node stays unconfigured.
    status = diagnostic_status("n", "", "", window, enabled=True, state="unconfigured",
                               error="cannot load model /m.onnx: no such file")
    assert status.level == DiagnosticStatus.ERROR
    assert status.message == ("unconfigured: no model loaded; configure failed: cannot load "
                              "model /m.onnx: no such file")
    with pytest.raises(ValueError, match="configuring"):
        diagnostic_status("n", "", "", window, enabled=True, state="configuring")
