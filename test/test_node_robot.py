"""emotion_node on a robot: one node per camera in namespaces, sim time set at run time,
parameter ranges over ROS, and a long model load that keeps /diagnostics publishing.

Real node processes and rclpy over DDS on loopback (a domain of this test's own), as the
other node tests. The long load is :mod:`helpers.slow_node` (the real node whose model load
first sleeps, a stand-in for a TensorRT engine build, which needs a GPU).
"""

from __future__ import annotations

import signal
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from helpers.node_probe import REPO, NodeProbe, image_msg, start_node, stop_node
from rosgraph_msgs.msg import Clock

START_TIMEOUT_S = 60.0


def _frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8)


def _domain(ros_env) -> int:
    return int(ros_env["ROS_DOMAIN_ID"])


def _statuses(probe: NodeProbe, since: float) -> list:
    return [s for t, m in probe.diagnostics if t > since for s in m.status]


def test_two_namespaced_nodes_answer_on_their_own_topics(ros_env, tmp_path, small_model_files):
    """A head and a base camera, one node each (the second also renamed), in one ROS graph:
    each answers its own camera's frames on <namespace>/people_emotions, nothing reaches the
    other's topic or /people_emotions, and /diagnostics names each by its full name."""
    _, onnx = small_model_files
    common = ("-p", f"model_path:={onnx}", "-p", "qos_reliability:=reliable")
    cameras = {"head": ("/head_camera/image_raw", "emotion_node"),
               "base": ("/base_camera/image_raw", "base_emotion")}
    processes, probes = {}, {}
    try:
        for namespace, (topic, name) in cameras.items():
            processes[namespace] = start_node(ros_env, tmp_path / f"{namespace}.log", *common,
                                              camera_topic=topic, namespace=namespace,
                                              node_name=name)
            probes[namespace] = NodeProbe(_domain(ros_env), name=f"probe_{namespace}",
                                          camera_topic=topic, namespace=namespace,
                                          node_name=name)
        since = time.monotonic()
        for namespace, probe in probes.items():
            assert probe.wait_for_node(processes[namespace], "raw", START_TIMEOUT_S), \
                (tmp_path / f"{namespace}.log").read_text()[-3000:]
        head, base = probes["head"], probes["base"]
        base._next_stamp = 5000  # the two probes' stamps never meet
        assert head.node.count_publishers("/people_emotions") == 0
        assert head.node.count_publishers("/head/people_emotions/overlay") == 1

        for probe, other, frame_id in ((head, base, "head_optical"), (base, head, "base_optical")):
            msg = probe.stamp(image_msg(_frame()), frame_id)
            people, _ = probe.answer(msg, timeout=30.0)
            assert people is not None, f"no answer on {probe.people_topic}"
            assert people.header.frame_id == frame_id
            other.spin_for(0.5)
            assert not other.people.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        assert {m.header.frame_id for answers in head.people.values() for m in answers} == \
            {"head_optical"}
        assert {m.header.frame_id for answers in base.people.values() for m in answers} == \
            {"base_optical"}
        head.spin_until(lambda: {"head/emotion_node: people emotions",
                                 "base/base_emotion: people emotions"}
                        <= {s.name for s in _statuses(head, since)}, 5.0)
        assert {s.name for s in _statuses(head, since)} >= {
            "head/emotion_node: people emotions", "base/base_emotion: people emotions"}
    finally:
        for probe in probes.values():
            probe.close()
        for process in processes.values():
            stop_node(process, signal.SIGINT)


@pytest.fixture
def sim_node(ros_env, tmp_path, small_model_files):
    _, onnx = small_model_files
    log = tmp_path / "node.log"
    process = start_node(ros_env, log, "-p", f"model_path:={onnx}",
                         "-p", "qos_reliability:=reliable")
    probe = NodeProbe(_domain(ros_env))
    try:
        assert probe.wait_for_node(process, "raw", START_TIMEOUT_S), log.read_text()[-3000:]
        yield process, probe, log
    finally:
        probe.close()
        stop_node(process, signal.SIGINT)


def test_use_sim_time_set_at_run_time_follows_clock(sim_node):
    """ros2 param set /emotion_node use_sim_time true is accepted while active; then the node's
    clock is /clock's (its diagnostics are stamped with it) and answers keep their frame's
    header."""
    process, probe, log = sim_node
    result = probe.set_parameter("use_sim_time", True)
    assert result is not None and result.successful, result
    clock_pub = probe.node.create_publisher(Clock, "/clock", 10)

    def sim_stamped() -> bool:
        clock_pub.publish(Clock(clock=Time(sec=4242, nanosec=0)))
        return any(m.header.stamp.sec == 4242 for _, m in probe.diagnostics)

    assert probe.spin_until(sim_stamped, 10.0, process), log.read_text()[-2000:]
    msg = probe.stamp(image_msg(_frame(1)))
    people, _ = probe.answer(msg)
    assert people is not None and people.header.stamp == msg.header.stamp
    result = probe.set_parameter("use_sim_time", False)
    assert result is not None and result.successful, result


def test_parameter_ranges_over_ros(sim_node):
    """describe_parameters (what ros2 param describe and rqt_reconfigure show) returns the
    ranges; a value outside one is refused by ROS and the node keeps going."""
    process, probe, log = sim_node
    names = ["detection_threshold", "max_people", "smoothing", "max_rate_hz", "autostart",
             "tensorrt_engine_cache"]
    described = dict(zip(names, probe.describe_parameters(names), strict=True))
    detection = described["detection_threshold"].floating_point_range[0]
    assert (detection.from_value, detection.to_value) == (-1.0, 1.0)
    people = described["max_people"].integer_range[0]
    assert (people.from_value, people.to_value, people.step) == (1, 1000, 1)
    assert described["smoothing"].floating_point_range[0].to_value == 1.0
    assert described["autostart"].read_only
    assert not described["tensorrt_engine_cache"].floating_point_range
    refused = probe.set_parameter("max_people", 0)
    assert refused is not None and not refused.successful and "max_people" in refused.reason
    assert probe.set_parameter("max_people", 2).successful
    msg = probe.stamp(image_msg(_frame(2)))
    answer, _ = probe.answer(msg)
    assert answer is not None and process.poll() is None


def test_a_value_outside_its_range_at_start_fails_with_its_name(ros_env, tmp_path,
                                                                 small_model_files):
    """-p max_people:=0 at start: one line naming the parameter, exit 1 (autostart)."""
    _, onnx = small_model_files
    log = tmp_path / "node.log"
    process = start_node(ros_env, log, "-p", f"model_path:={onnx}", "-p", "max_people:=0")
    assert process.wait(60) == 1
    lines = [line for line in log.read_text().splitlines() if line.startswith("emotion_node:")]
    assert len(lines) == 1 and lines[0].startswith("emotion_node: bad parameters: max_people"), \
        log.read_text()[-2000:]


LOAD_S = 6.0


def test_a_long_model_load_keeps_diagnostics_publishing(ros_env, tmp_path, small_model_files):
    """autostart with a model load of LOAD_S seconds: /diagnostics keep coming every second,
    saying "configuring: loading model" with the time so far, then the node answers."""
    _, onnx = small_model_files
    log = tmp_path / "node.log"
    slow = [sys.executable, str(REPO / "test" / "helpers" / "slow_node.py"), str(LOAD_S)]
    started = time.monotonic()
    process = start_node(ros_env, log, "-p", f"model_path:={onnx}",
                         "-p", "qos_reliability:=reliable", command=slow)
    probe = NodeProbe(_domain(ros_env))
    try:
        assert probe.wait_for_node(process, "raw", START_TIMEOUT_S + LOAD_S), \
            log.read_text()[-3000:]
        loading = [s for s in _statuses(probe, started)
                   if "configuring: loading model" in s.message]
        seconds = [float({kv.key: kv.value for kv in s.values}["loading_s"]) for s in loading]
        assert len(loading) >= 3, [s.message for s in _statuses(probe, started)]
        assert seconds == sorted(seconds) and seconds[-1] - seconds[0] >= 2.0, seconds
        assert all(s.level == s.OK for s in loading)
        msg = probe.stamp(image_msg(_frame(3)))
        people, _ = probe.answer(msg)
        assert people is not None
    finally:
        probe.close()
        stop_node(process, signal.SIGINT)


def test_a_lifecycle_configure_answers_when_the_long_load_is_done(ros_env, tmp_path,
                                                                  small_model_files):
    """autostart false: the configure transition's answer comes when the load is done
    (success), while /diagnostics keep publishing "loading model" meanwhile."""
    _, onnx = small_model_files
    log = tmp_path / "node.log"
    slow = [sys.executable, str(REPO / "test" / "helpers" / "slow_node.py"), str(LOAD_S)]
    process = start_node(ros_env, log, "-p", f"model_path:={onnx}", "-p", "autostart:=false",
                         "-p", "qos_reliability:=reliable", command=slow)
    probe = NodeProbe(_domain(ros_env))
    try:
        assert probe.lifecycle_state(START_TIMEOUT_S) == "unconfigured", log.read_text()[-3000:]
        asked = time.monotonic()
        assert probe.change_state("configure", timeout=LOAD_S + 30.0) is True
        answered = time.monotonic()
        assert answered - asked >= LOAD_S - 0.5
        during = [t for t, m in probe.diagnostics if asked < t < answered
                  and any("configuring: loading model" in s.message for s in m.status)]
        assert len(during) >= 3, log.read_text()[-2000:]
        assert probe.lifecycle_state() == "inactive"
    finally:
        probe.close()
        stop_node(process, signal.SIGINT)


def test_sigint_during_a_long_model_load_ends_the_node_at_once(ros_env, tmp_path,
                                                                small_model_files):
    """A load of minutes does not hold the process: SIGINT while it loads ends it with 0."""
    _, onnx = small_model_files
    log = tmp_path / "node.log"
    slow = [sys.executable, str(REPO / "test" / "helpers" / "slow_node.py"), "120"]
    process = start_node(ros_env, log, "-p", f"model_path:={onnx}", command=slow)
    probe = NodeProbe(_domain(ros_env))
    try:
        assert probe.spin_until(lambda: any("loading model" in s.message
                                            for s in _statuses(probe, 0.0)),
                                START_TIMEOUT_S, process), log.read_text()[-3000:]
        interrupted = time.monotonic()
        assert stop_node(process, signal.SIGINT) == 0, log.read_text()[-3000:]
        assert time.monotonic() - interrupted < 10.0
    finally:
        probe.close()
        stop_node(process, signal.SIGKILL)
