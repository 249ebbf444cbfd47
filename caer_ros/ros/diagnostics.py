"""Frame counters of the emotion node and their /diagnostics status.

:class:`FrameStats` is shared by the subscription callback (received, dropped) and the worker
thread (processed with latency, bad); :meth:`FrameStats.window` gives the totals and the
rates since the previous call, which :func:`diagnostic_status` turns into one
``diagnostic_msgs/DiagnosticStatus``, naming the node's lifecycle state too. Latency is arrival
of the message to publication of its result (conversion, inference, tracking, message
building).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


@dataclass(frozen=True)
class StatsWindow:
    """Totals since start, and rates / latency over the last window."""

    received: int
    processed: int
    dropped: int
    bad: int
    failed: int
    input_hz: float
    processing_hz: float
    latency_ms: float  # mean over the window, NaN when nothing was processed
    max_latency_ms: float
    new_bad: int  # bad frames within the window
    seconds_since_input: float  # since the last message arrived (inf: none yet)


class FrameStats:
    """Thread-safe frame counters (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = {"received": 0, "processed": 0, "dropped": 0, "bad": 0, "failed": 0}
        self._window_start = time.monotonic()
        self._window_counts = dict.fromkeys(self._totals, 0)
        self._latencies: list[float] = []
        self._last_input = -1.0

    def _add(self, key: str) -> None:
        with self._lock:
            self._totals[key] += 1
            self._window_counts[key] += 1

    def received(self) -> None:
        self._add("received")
        self._last_input = time.monotonic()

    def dropped(self) -> None:
        self._add("dropped")

    def bad(self) -> None:
        self._add("bad")

    def failed(self) -> None:
        """A frame the predictor (not the image) failed on."""
        self._add("failed")

    def processed(self, latency_s: float) -> None:
        with self._lock:
            self._totals["processed"] += 1
            self._window_counts["processed"] += 1
            self._latencies.append(latency_s)

    def seconds_since_input(self) -> float:
        last = self._last_input
        return float("inf") if last < 0 else time.monotonic() - last

    def window(self) -> StatsWindow:
        """Totals, and rates since the previous call (which starts a new window)."""
        now = time.monotonic()
        with self._lock:
            elapsed = max(now - self._window_start, 1e-9)
            counts, latencies = self._window_counts, self._latencies
            totals = dict(self._totals)
            self._window_start = now
            self._window_counts = dict.fromkeys(self._totals, 0)
            self._latencies = []
        return StatsWindow(
            **totals,
            input_hz=counts["received"] / elapsed,
            processing_hz=counts["processed"] / elapsed,
            latency_ms=1e3 * sum(latencies) / len(latencies) if latencies else float("nan"),
            max_latency_ms=1e3 * max(latencies) if latencies else float("nan"),
            new_bad=counts["bad"] + counts["failed"],
            seconds_since_input=self.seconds_since_input(),
        )


LIFECYCLE_STATES = ("unconfigured", "inactive", "active", "finalized")


def diagnostic_status(name: str, backend: str, input_topic: str, stats: StatsWindow,
                      enabled: bool, no_input_after_s: float = 5.0, state: str = "active",
                      error: str = "", loading: tuple[str, float] | None = None
                      ) -> DiagnosticStatus:
    """One status: the lifecycle ``state`` (and, while active, running or paused), OK or WARN
    with the reason (no input while active, bad frames), ERROR with ``error`` (why the last
    configure failed, while unconfigured); values for each count. ``loading``: (what, seconds
    so far) while a configure loads the model (e.g. "building engine", 95.0): said in the
    message and as ``loading`` / ``loading_s``."""
    if state not in LIFECYCLE_STATES:
        raise ValueError(f"unknown lifecycle state {state!r}")
    problems = []
    if state == "active" and stats.seconds_since_input > no_input_after_s:
        problems.append(f"no image on {input_topic} for {no_input_after_s:.0f} s")
    if stats.new_bad:
        problems.append(f"{stats.new_bad} bad or failed frames")
    if error and state == "unconfigured" and loading is None:
        problems.append(f"configure failed: {error}")
    status = DiagnosticStatus(name=name, hardware_id=backend)
    status.level = (DiagnosticStatus.ERROR if error and state == "unconfigured" and
                    loading is None else
                    DiagnosticStatus.WARN if problems else DiagnosticStatus.OK)
    doing = {
        "active": "running" if enabled else "paused (~/enable)",
        "inactive": "not processing",
        "unconfigured": "no model loaded",
        "finalized": "shut down",
    }[state]
    if loading is not None:
        doing = f"configuring: {loading[0]} ({loading[1]:.0f} s)"
    status.message = "; ".join([f"{state}: {doing}", *problems])
    values = {
        "lifecycle_state": state,
        "backend": backend,
        "input_topic": input_topic,
        "enabled": str(enabled).lower(),
        "input_rate_hz": f"{stats.input_hz:.2f}",
        "processing_rate_hz": f"{stats.processing_hz:.2f}",
        "latency_ms": f"{stats.latency_ms:.1f}",
        "max_latency_ms": f"{stats.max_latency_ms:.1f}",
        "frames_received": str(stats.received),
        "frames_processed": str(stats.processed),
        "frames_dropped": str(stats.dropped),
        "frames_bad": str(stats.bad),
        "frames_failed": str(stats.failed),
    }
    if loading is not None:
        values.update(loading=loading[0], loading_s=f"{loading[1]:.1f}")
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status
