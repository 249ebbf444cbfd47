"""emotion_node as a managed (lifecycle) node, driven through its lifecycle services.

Two node processes, started together for this module the way the launch file starts them,
each on a domain id of its own (discovery on loopback only), both with the session's small
model as a .pt file (torch backend) and ``qos_reliability:=reliable`` (the tests count on
delivery):

- ``managed``: ``autostart:=false`` and a model path that does not exist. The test process
  walks it through the states with ``/emotion_node/change_state`` and ``get_state``
  (lifecycle_msgs), the way ``ros2 lifecycle set`` or a lifecycle manager does: a failed
  configure, a fixed ``model_path`` (SetParameters), configure, activate, deactivate, the
  ``~/enable`` shortcut, cleanup. The steps are tests in file order sharing the process.
- ``autostarted``: the default ``autostart``: answers with no transition asked, as a plain
  node does.

"No answer" is checked against a barrier where possible: frames published while the node
must ignore them, then a frame that must be answered; by the time it is, the earlier ones
would have been too.
"""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest
from helpers.node_probe import NodeProbe, stamp_key, start_node, stop_node
from sensor_msgs.msg import Image

START_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 30.0
QUIET_S = 1.0  # how long to listen for answers that must not come


@pytest.fixture(scope="module")
def node_processes(request, tmp_path_factory):
    """``{"managed": (process, domain, log, missing model path), "autostarted": (...)}``. The
    managed node needs no model to start: it starts while the model file is written."""
    logs = tmp_path_factory.mktemp("lifecycle_node_logs")
    missing = logs / "no_such_model.onnx"
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    managed_domain, auto_domain = random.SystemRandom().sample(range(1, 101), 2)
    started = {"managed": (start_node({**env, "ROS_DOMAIN_ID": str(managed_domain)},
                                      logs / "managed.log", "-p", "autostart:=false",
                                      "-p", f"model_path:={missing}",
                                      "-p", "qos_reliability:=reliable"),
                           managed_domain, logs / "managed.log", missing)}
    try:
        model = request.getfixturevalue("small_model_pt")
        started["autostarted"] = (
            start_node({**env, "ROS_DOMAIN_ID": str(auto_domain)}, logs / "autostarted.log",
                       "-p", f"model_path:={model}", "-p", "backend:=torch",
                       "-p", "qos_reliability:=reliable"),
            auto_domain, logs / "autostarted.log", None)
        yield started
    finally:
        for process, *_ in started.values():
            stop_node(process, signal.SIGINT)


def _probe(node_processes, which: str) -> NodeProbe:
    process, domain, log, _ = node_processes[which]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        probe = NodeProbe(domain, reliable=True)
    clients = (probe.get_state_client, probe.change_state_client, probe.enable_client,
               probe.parameters_client)
    if not probe.spin_until(lambda: all(c.service_is_ready() for c in clients), START_TIMEOUT_S,
                            process):
        probe.close()
        pytest.fail(f"the {which} node did not come up (exit {process.poll()}):\n"
                    f"{log.read_text()}")
    return probe


@pytest.fixture(scope="module")
def managed(node_processes):
    """(process, probe, log, missing model path) of the autostart:=false node."""
    probe = _probe(node_processes, "managed")
    process, _, log, missing = node_processes["managed"]
    yield process, probe, log, missing
    probe.close()


@pytest.fixture(scope="module")
def frame():
    """``frame(probe)``: a 160x120 bgr8 image with a stamp of its own (any image is answered,
    with or without people)."""
    rows = np.linspace(0, 255, 120, dtype=np.uint8)[:, None, None]
    bgr = np.broadcast_to(rows, (120, 160, 3)).copy()
    bgr[30:110, 60:100] = (40, 90, 200)
    data = bgr.tobytes()
    return lambda probe: probe.stamp(Image(height=120, width=160, encoding="bgr8", step=480,
                                           data=data))


def _answers(probe: NodeProbe) -> int:
    return sum(len(answers) for answers in probe.people.values())


def _status(probe: NodeProbe, timeout: float = 15.0):
    """The first /diagnostics status published from now on (None: none in time)."""
    moment = time.monotonic()
    if not probe.spin_until(lambda: any(t > moment and m.status for t, m in probe.diagnostics),
                            timeout):
        return None
    status = next(m for t, m in probe.diagnostics if t > moment and m.status).status[0]
    return status, {kv.key: kv.value for kv in status.values}


def _quiet(probe: NodeProbe, frames: list) -> None:
    """Publish ``frames`` a little apart, then listen for QUIET_S."""
    for msg in frames:
        probe.publish(msg)
        probe.spin_for(0.1)
    probe.spin_for(QUIET_S)


def _answer(process, probe, log, msg):
    people, _ = probe.answer(msg, ANSWER_TIMEOUT_S, process, repeat_s=0.5)
    assert people is not None, f"no answer to frame {msg.header.stamp} (node exit " \
                               f"{process.poll()}):\n{log.read_text()[-3000:]}"
    assert people.header == msg.header
    return people


# --------------------------------------------------------------------------- autostart:=false


def test_waits_unconfigured_without_autostart(managed, frame):
    process, probe, log, _ = managed
    assert probe.lifecycle_state() == "unconfigured", log.read_text()
    assert probe.node.count_publishers("/people_emotions") == 0
    assert probe.raw_pub.get_subscription_count() == 0
    diagnostics = _status(probe)  # published in every state
    assert diagnostics is not None, f"no /diagnostics while unconfigured:\n{log.read_text()}"
    status, values = diagnostics
    assert values["lifecycle_state"] == "unconfigured" and status.message.startswith(
        "unconfigured")
    response = probe.set_enabled(True)  # the enable shortcut cannot load a model
    assert response is not None and not response.success, (response, log.read_text())
    assert "configure" in response.message
    _quiet(probe, [frame(probe)])
    assert _answers(probe) == 0, probe.people
    assert probe.lifecycle_state() == "unconfigured" and process.poll() is None


def test_configure_with_a_missing_model_fails_and_stays_unconfigured(managed):
    process, probe, log, missing = managed
    assert probe.change_state("configure") is False
    assert probe.lifecycle_state() == "unconfigured"
    assert process.poll() is None, log.read_text()
    errors = [line for line in log.read_text().splitlines() if "configure failed" in line]
    assert len(errors) == 1, log.read_text()
    assert "ERROR" in errors[0] and str(missing) in errors[0]
    diagnostics = _status(probe)
    assert diagnostics is not None
    status, values = diagnostics
    assert values["lifecycle_state"] == "unconfigured" and str(missing) in status.message
    assert status.level == status.ERROR
    assert probe.node.count_publishers("/people_emotions") == 0


def test_configure_succeeds_after_fixing_model_path(managed, small_model_pt, frame):
    """model_path (and backend: the .pt file, quicker to write than the ONNX export) set while
    unconfigured, as ``ros2 param set`` does; the next configure reads them."""
    process, probe, log, _ = managed
    result = probe.set_parameter("model_path", 3)  # still validated when unconfigured
    assert result is not None and not result.successful and "model_path" in result.reason
    for name, value in (("model_path", str(small_model_pt)), ("backend", "torch")):
        result = probe.set_parameter(name, value)
        assert result is not None and result.successful, result
    assert probe.change_state("configure") is True, log.read_text()[-3000:]
    assert probe.lifecycle_state() == "inactive"
    _, values = _status(probe)
    assert values["lifecycle_state"] == "inactive" and values["backend"].startswith("torch")
    # Configured: what configure read is fixed now, the [runtime] parameters are not.
    result = probe.set_parameter("backend", "onnxruntime")
    assert result is not None and not result.successful
    assert "read-only while the node is configured" in result.reason
    result = probe.set_parameter("max_people", 5)
    assert result is not None and result.successful, result
    # Inactive: the model is loaded, yet frames are not taken and nothing is published.
    assert probe.raw_pub.get_subscription_count() == 0
    _quiet(probe, [frame(probe) for _ in range(3)])
    assert _answers(probe) == 0


def test_activate_answers(managed, frame):
    process, probe, log, _ = managed
    assert probe.change_state("activate") is True
    assert probe.lifecycle_state() == "active"
    _answer(process, probe, log, frame(probe))
    _, values = _status(probe)
    assert values["lifecycle_state"] == "active"


def test_deactivate_stops_answers_and_enable_reactivates(managed, frame):
    process, probe, log, _ = managed
    assert probe.change_state("deactivate") is True
    assert probe.lifecycle_state() == "inactive"
    before = _answers(probe)
    ignored = [frame(probe) for _ in range(5)]
    _quiet(probe, ignored)
    _, values = _status(probe)
    assert values["lifecycle_state"] == "inactive"

    response = probe.set_enabled(True)  # the shortcut: activates an inactive node
    assert response is not None and response.success, response
    assert probe.lifecycle_state() == "active"
    _answer(process, probe, log, frame(probe))  # the barrier
    assert not any(probe.people[stamp_key(m)] for m in ignored), "answered while inactive"
    assert _answers(probe) == before + 1


def test_enable_false_pauses_while_staying_active(managed, frame):
    process, probe, log, _ = managed
    response = probe.set_enabled(False)
    assert response is not None and response.success
    assert probe.lifecycle_state() == "active"
    paused = [frame(probe) for _ in range(3)]
    _quiet(probe, paused)
    status, values = _status(probe)
    assert values["lifecycle_state"] == "active" and values["enabled"] == "false"
    assert "paused" in status.message
    response = probe.set_enabled(True)
    assert response is not None and response.success
    _answer(process, probe, log, frame(probe))
    assert not any(probe.people[stamp_key(m)] for m in paused), "answered while paused"


def test_cleanup_unloads_the_model_and_sigint_ends_the_node(managed, frame):
    process, probe, log, _ = managed
    assert probe.change_state("cleanup") is False  # only from inactive
    assert probe.change_state("deactivate") is True
    assert probe.change_state("cleanup") is True
    assert probe.lifecycle_state() == "unconfigured"
    _, values = _status(probe)
    assert values["lifecycle_state"] == "unconfigured" and values["backend"] == ""
    assert probe.spin_until(lambda: probe.node.count_publishers("/people_emotions") == 0, 5.0)
    # Unconfigured again: every parameter but autostart may change, for the next configure.
    result = probe.set_parameter("backend", "onnxruntime")
    assert result is not None and result.successful, result
    result = probe.set_parameter("autostart", True)
    assert result is not None and not result.successful
    code = stop_node(process, signal.SIGINT)
    assert code == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and "frame from" not in text, text[-3000:]  # no failed frame


# --------------------------------------------------------------------------- autostart (default)


def test_autostart_answers_without_any_transition(node_processes, frame):
    process, _, log, _ = node_processes["autostarted"]
    probe = _probe(node_processes, "autostarted")
    try:
        assert probe.wait_for_node(process, "raw", START_TIMEOUT_S), log.read_text()
        _answer(process, probe, log, frame(probe))
        assert probe.lifecycle_state() == "active"
        status, values = _status(probe)
        assert values["lifecycle_state"] == "active" and status.message.startswith("active")
    finally:
        probe.close()
