"""emotion_node end to end: frames in, people out, through real rclpy and DDS.

Two node processes, each started once for this module the way the launch file starts it
(``emotion_node --ros-args --params-file config/emotion.yaml -p model_path:=... -r
image:=/camera/image_raw``), each on a domain id of its own, discovery on loopback only:

- ``raw_node``: the ONNX export of the session's small seeded model (ONNX Runtime, the default
  backend), raw images, ``qos_reliability:=reliable`` (the tests count on delivery);
- ``compressed_node``: the same model as a PyTorch file (torch backend), ``image_transport:=
  compressed``, and the params file's default QoS, best effort, fed by a best-effort
  publisher as a camera driver would be.

Frames: scikit-image's astronaut photo and generated scenes with person-like shapes (head,
torso, legs). The model is untrained, so *where* it finds people says nothing; what is
checked is the contract: each answer carries its frame's header, the model's categories and
boxes inside the image, and for the ONNX node the people equal those of the Predictor run in
this process on the same pixels (which also proves the colour conversion of each encoding).

Tracking is checked the honest way for an untrained model: the network is deterministic, so
the same frame published again gives the same boxes, and the node must then keep every id;
ids are non-empty and unique within a frame. That a person moving a little keeps one id is
tested on the tracker itself (test/test_tracking.py), where the boxes are chosen.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from helpers.node_probe import NodeProbe, image_msg, stamp_key, start_node, stop_node
from helpers.small_model import small_config
from sensor_msgs.msg import CompressedImage, Image
from skimage import data

from caer_ros.inference.predictor import Predictor
from caer_ros.ros.image_conversion import ImageConversionError, to_bgr

CATEGORIES = next(iter(small_config().categories.values()))
START_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- frames


def astronaut(width: int = 512, height: int = 512) -> np.ndarray:
    """The astronaut photo (512x512 in the wheel) as BGR, resized when asked."""
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    if (width, height) != (512, 512):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return bgr


def synthetic_scene(width: int, height: int, people: int, seed: int) -> np.ndarray:
    """A room-like background (gradient, floor) with ``people`` standing figures: skin-toned
    head, coloured torso and arms, dark legs; sizes and places drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    wall = np.array(rng.integers(120, 220, 3), np.float32)
    image = np.broadcast_to(wall * (0.8 + 0.2 * rows), (height, width, 3)).copy()
    image[int(height * 0.75):] = rng.integers(40, 100, 3)
    image = image.astype(np.uint8)
    for _ in range(people):
        size = rng.uniform(0.35, 0.8) * height  # standing height in pixels
        cx = rng.uniform(0.15, 0.85) * width
        feet = rng.uniform(0.8, 0.98) * height
        head = size / 8
        top = feet - size
        skin = tuple(int(v) for v in rng.integers([60, 110, 150], [120, 170, 230]))
        shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.rectangle(image, (int(cx - head * 0.8), int(top + 3 * head)),  # legs
                      (int(cx + head * 0.8), int(feet)), (40, 40, 60), -1)
        cv2.rectangle(image, (int(cx - head * 1.1), int(top + 2 * head)),  # torso
                      (int(cx + head * 1.1), int(top + 5 * head)), shirt, -1)
        for side in (-1, 1):  # arms
            cv2.line(image, (int(cx + side * head * 1.1), int(top + 2.3 * head)),
                     (int(cx + side * head * 1.8), int(top + 4.8 * head)), shirt,
                     max(2, int(head * 0.4)))
        cv2.ellipse(image, (int(cx), int(top + head)), (int(head * 0.75), int(head)), 0, 0,
                    360, skin, -1)
    return image


def compressed_msg(bgr: np.ndarray, fmt: str) -> CompressedImage:
    ok, encoded = cv2.imencode("." + fmt, bgr)
    assert ok
    return CompressedImage(format=fmt, data=encoded.tobytes())


# --------------------------------------------------------------------------- nodes


def _domain_ids(count: int) -> list[int]:
    return random.SystemRandom().sample(range(1, 101), count)


@pytest.fixture(scope="module")
def node_processes(small_model_files, tmp_path_factory):
    """Both nodes, started together (start-up is mostly imports and loading the model):
    ``{"raw": (process, domain, log), "compressed": (...)}``."""
    pt, onnx_path = small_model_files
    logs = tmp_path_factory.mktemp("emotion_node_logs")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    raw_domain, compressed_domain = _domain_ids(2)
    started = {
        "raw": (start_node({**env, "ROS_DOMAIN_ID": str(raw_domain)}, logs / "raw.log",
                           "-p", f"model_path:={onnx_path}", "-p", "qos_reliability:=reliable"),
                raw_domain, logs / "raw.log"),
        "compressed": (start_node({**env, "ROS_DOMAIN_ID": str(compressed_domain)},
                                  logs / "compressed.log", "-p", f"model_path:={pt}",
                                  "-p", "backend:=torch", "-p", "image_transport:=compressed"),
                       compressed_domain, logs / "compressed.log"),
    }
    yield started
    for process, _, _ in started.values():
        stop_node(process, signal.SIGINT)


def _probe(node_processes, which: str, reliable: bool):
    process, domain, log = node_processes[which]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        probe = NodeProbe(domain, reliable=reliable)
    transport = "raw" if which == "raw" else "compressed"
    if not probe.wait_for_node(process, transport, START_TIMEOUT_S):
        probe.close()
        pytest.fail(f"the {which} node did not come up (exit {process.poll()}):\n"
                    f"{log.read_text()}")
    return probe


@pytest.fixture(scope="module")
def raw_node(node_processes):
    """(process, probe with reliable publishers, log path) of the raw-image ONNX node."""
    probe = _probe(node_processes, "raw", reliable=True)
    process, _, log = node_processes["raw"]
    yield process, probe, log
    probe.close()


@pytest.fixture(scope="module")
def compressed_node(node_processes):
    """(process, probe with best-effort publishers, log path) of the compressed torch node."""
    probe = _probe(node_processes, "compressed", reliable=False)
    process, _, log = node_processes["compressed"]
    yield process, probe, log
    probe.close()


@pytest.fixture(scope="module")
def predictor(small_model_files):
    """The ONNX node's model, in this process."""
    return Predictor.from_file(small_model_files[1])


def _answer(node, msg, **kwargs):
    process, probe, log = node
    people, overlay = probe.answer(msg, ANSWER_TIMEOUT_S, process, **kwargs)
    assert people is not None, f"no answer to frame {msg.header.stamp} (node exit " \
                               f"{process.poll()}):\n{log.read_text()[-3000:]}"
    return people, overlay


def _check_answer(answer, msg, width: int, height: int) -> None:
    """The contract of one answer: input header, the model's categories, people whose boxes
    lie inside the image, scores in 0..1, labels among the categories, unique non-empty ids."""
    assert answer.header == msg.header
    assert tuple(answer.categories) == CATEGORIES
    for person in answer.people:
        assert 0.0 <= person.x_min < person.x_max <= width, person
        assert 0.0 <= person.y_min < person.y_max <= height, person
        assert 0.0 <= person.detection_score <= 1.0
        assert len(person.scores) == len(CATEGORIES)
        assert all(0.0 <= s <= 1.0 for s in person.scores)
        assert set(person.labels) <= set(CATEGORIES)
        for value in (person.valence, person.arousal, person.dominance):  # continuous head
            assert 0.0 <= value <= 1.0
    ids = [p.id for p in answer.people]
    assert all(ids) and len(set(ids)) == len(ids), ids


# --------------------------------------------------------------------------- raw, ONNX Runtime


FRAMES = {  # name -> (BGR image, encoding, row padding)
    "astronaut_rgb8": (lambda: astronaut(), "rgb8", 0),
    "astronaut_bgr8_padded": (lambda: astronaut(640, 480), "bgr8", 64),
    "scene_bgr8": (lambda: synthetic_scene(640, 360, 3, seed=1), "bgr8", 0),
    "scene_mono8": (lambda: synthetic_scene(320, 240, 2, seed=2), "mono8", 3),
}


@pytest.mark.parametrize("name", list(FRAMES))
def test_answer_has_the_frame_header_categories_and_the_predictors_people(raw_node, predictor,
                                                                          name):
    make, encoding, padding = FRAMES[name]
    bgr = make()
    msg = raw_node[1].stamp(image_msg(bgr, encoding, padding), frame_id=f"cam_{name}")
    answer, _ = _answer(raw_node, msg)
    _check_answer(answer, msg, bgr.shape[1], bgr.shape[0])
    expected = predictor.predict(to_bgr(msg), max_people=20)
    assert len(answer.people) == len(expected)
    if name.startswith("astronaut"):
        assert answer.people, "the seeded model finds people on the photo: checks would be void"
    boxes = np.array([[p.x_min, p.y_min, p.x_max, p.y_max] for p in answer.people]).reshape(-1, 4)
    np.testing.assert_allclose(boxes, expected.boxes, atol=0.05)
    np.testing.assert_allclose([list(p.scores) for p in answer.people],
                               expected.scores.reshape(len(expected), -1), atol=1e-4)


def test_overlay_comes_with_the_same_header(raw_node):
    bgr = synthetic_scene(480, 320, 2, seed=3)
    msg = raw_node[1].stamp(image_msg(bgr), frame_id="overlay_cam")
    answer, overlay = _answer(raw_node, msg, overlay=True)
    assert overlay.header == msg.header == answer.header
    assert (overlay.width, overlay.height, overlay.encoding) == (480, 320, "bgr8")
    drawn = np.frombuffer(overlay.data, np.uint8).reshape(320, overlay.step)[:, :480 * 3]
    if answer.people:
        assert not np.array_equal(drawn.reshape(bgr.shape), bgr), "nothing drawn"


def test_ids_are_kept_for_the_same_frame_again(raw_node):
    """Same pixels, new stamps: the untrained network gives the same boxes, so every person
    must keep their id (see the module docstring for why not a moving person here)."""
    bgr = astronaut(640, 480)
    answers = [_answer(raw_node, raw_node[1].stamp(image_msg(bgr)))[0] for _ in range(3)]
    ids = [[p.id for p in a.people] for a in answers]
    assert ids[0], "no people: nothing to track"
    assert all(ids[0]) and len(set(ids[0])) == len(ids[0]), ids[0]
    assert ids[1] == ids[0] and ids[2] == ids[0]


def test_frame_without_people_is_answered_with_no_people(raw_node):
    """Nobody in the frame (here: detection_threshold raised to 1.0 at run time) is still an
    answer, with an empty list; the model has a continuous head, the case that once failed."""
    _, probe, _ = raw_node
    bgr = synthetic_scene(320, 240, 2, seed=8)
    result = probe.set_parameter("detection_threshold", 1.0)
    assert result is not None and result.successful, result
    try:
        msg = probe.stamp(image_msg(bgr))
        answer, _ = _answer(raw_node, msg)
        _check_answer(answer, msg, 320, 240)
        assert list(answer.people) == []
    finally:
        result = probe.set_parameter("detection_threshold", -1.0)
    assert result is not None and result.successful, result
    answer, _ = _answer(raw_node, probe.stamp(image_msg(bgr)))
    assert answer.people


def _refused(msg) -> bool:
    try:
        to_bgr(msg)
    except ImageConversionError:
        return True
    return False


def malformed_images() -> list[tuple[str, Image]]:
    """(kind, message) for at least 200 raw images the node must skip."""
    rng = np.random.default_rng(0)
    cases: list[tuple[str, Image]] = []
    for n in range(25):
        w, h = 8 + n, 6 + n
        for encoding in ("yuv422", "32FC1", "bayer_rggb8", "", "BGR8", "16UC3", "jpeg"):
            cases.append(("unsupported encoding", Image(
                width=w, height=h, encoding=encoding, step=w * 3, data=bytes(w * 3 * h))))
        cases.append(("short data", Image(width=w, height=h, encoding="bgr8", step=w * 3,
                                          data=bytes(w * 3 * h - 1 - n))))
        cases.append(("long data", Image(width=w, height=h, encoding="rgb8", step=w * 3,
                                         data=bytes(w * 3 * h + 1 + n))))
        cases.append(("zero size", Image(width=0 if n % 2 else w, height=h if n % 2 else 0,
                                         encoding="mono8", step=w, data=b"")))
        huge = 2 ** 16 + n * 1000
        cases.append(("huge size, small data", Image(
            width=huge, height=huge, encoding="bgr8", step=huge * 3,
            data=rng.integers(0, 256, 64, dtype=np.uint8).tobytes())))
        cases.append(("huge size, small data", Image(
            width=2 ** 32 - 1, height=2 ** 32 - 1, encoding="mono16", step=2 ** 32 - 1,
            data=bytes(10))))
        cases.append(("step smaller than a row", Image(
            width=w, height=h, encoding="bgra8", step=w * 4 - 1, data=bytes((w * 4 - 1) * h))))
        cases.append(("zero step", Image(width=w, height=h, encoding="mono8", step=0, data=b"")))
        cases.append(("odd 16-bit data", Image(width=w, height=h, encoding="mono16", step=w * 2,
                                               data=bytes(w * 2 * h - 1))))
    return cases


def test_malformed_frames_are_skipped_and_the_node_lives(raw_node):
    process, probe, log = raw_node
    cases = malformed_images()
    assert len(cases) >= 200 and len({kind for kind, _ in cases}) >= 8
    for kind, msg in cases:  # they are malformed: the conversion refuses each one
        assert _refused(msg), kind
    before_counts = probe.latest_diagnostics()
    for _, msg in cases:  # paced so that the node, which keeps the newest frame, sees many
        probe.publish(probe.stamp(msg))
        probe.executor.spin_once(timeout_sec=0.02)
    bgr = synthetic_scene(320, 240, 1, seed=4)
    valid = probe.stamp(image_msg(bgr))
    answer, _ = _answer(raw_node, valid)
    _check_answer(answer, valid, 320, 240)
    assert process.poll() is None, log.read_text()[-3000:]
    assert not any(probe.people[stamp_key(msg)]
                   for _, msg in cases), "a malformed frame was answered"
    counts = probe.diagnostics_after(time.monotonic())
    assert counts is not None, "no /diagnostics"
    assert counts["frames_failed"] == "0"  # each was refused as a bad image, not a crash
    bad = int(counts["frames_bad"]) - int(before_counts.get("frames_bad", 0))
    assert int(counts["frames_processed"]) >= 1
    received = int(counts["frames_received"]) - int(before_counts.get("frames_received", 0))
    # Many reached the node and were refused there (the subscription keeps only the newest
    # message, so under load some are replaced before the node takes them).
    assert received >= bad >= 50, counts
    assert "skipping bad frame" in log.read_text()


def test_enable_false_stops_answers_true_resumes(raw_node):
    process, probe, _ = raw_node
    bgr = synthetic_scene(320, 240, 2, seed=5)
    _answer(raw_node, probe.stamp(image_msg(bgr)))  # running

    response = probe.set_enabled(False)
    assert response is not None and response.success
    paused = [probe.stamp(image_msg(bgr)) for _ in range(5)]
    for msg in paused:
        probe.publish(msg)
        probe.spin_for(0.3)
    probe.spin_for(1.0)
    assert not any(probe.people[stamp_key(m)] for m in paused)
    counts = probe.diagnostics_after(time.monotonic())
    assert counts is not None and counts["enabled"] == "false"

    response = probe.set_enabled(True)
    assert response is not None and response.success
    resumed = probe.stamp(image_msg(bgr))
    answer, _ = _answer(raw_node, resumed)
    _check_answer(answer, resumed, 320, 240)
    assert process.poll() is None


# --------------------------------------------------------------------------- compressed, torch


def test_compressed_frames_best_effort_torch_backend(compressed_node):
    _, probe, log = compressed_node
    frames = [(astronaut(), "jpeg"), (synthetic_scene(640, 360, 3, seed=6), "png")]
    for bgr, fmt in frames:
        msg = probe.stamp(compressed_msg(bgr, fmt), frame_id=f"cam_{fmt}")
        answer, overlay = _answer(compressed_node, msg, overlay=True)
        _check_answer(answer, msg, bgr.shape[1], bgr.shape[0])
        assert overlay.header == msg.header
        assert (overlay.width, overlay.height) == (bgr.shape[1], bgr.shape[0])
    text = log.read_text()
    assert "torch:cpu" in text and "compressed, best_effort" in text, text


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but whose data is 8x8."""
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    png = bytearray(png.tobytes())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_undecodable_compressed_frames_are_skipped(compressed_node):
    process, probe, log = compressed_node
    rng = np.random.default_rng(1)
    jpeg = compressed_msg(astronaut(128, 128), "jpeg").data.tobytes()
    cases = []
    for n in range(12):
        cases += [
            CompressedImage(format="jpeg", data=b""),
            CompressedImage(format="jpeg", data=rng.integers(0, 256, 50 + n,
                                                             dtype=np.uint8).tobytes()),
            CompressedImage(format="jpeg", data=jpeg[:len(jpeg) // (2 + n)]),
            CompressedImage(format="png", data=_png_claiming(30000 + n, 30000)),
            CompressedImage(format="bgr8; jpeg compressed bgr8", data=b"\xff\xd8\xff" + bytes(n)),
        ]
    assert all(_refused(msg) for msg in cases)
    for msg in cases:
        probe.publish(probe.stamp(msg))
        probe.executor.spin_once(timeout_sec=0.002)
    bgr = synthetic_scene(320, 240, 1, seed=7)
    valid = probe.stamp(compressed_msg(bgr, "jpeg"))
    answer, _ = _answer(compressed_node, valid)
    _check_answer(answer, valid, 320, 240)
    assert process.poll() is None, log.read_text()[-3000:]


# --------------------------------------------------------------------------- shutdown


def test_best_effort_camera_on_a_reliable_node_is_named_in_a_warning(node_processes, raw_node):
    """The most reported failure of camera nodes: a QoS mismatch that silently gives nothing.
    A best-effort camera on the reliable raw node never reaches it; the node must say so,
    naming the topic and the parameter to change."""
    process, _, log = raw_node
    _, domain, _ = node_processes["raw"]
    before = len(log.read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        camera = NodeProbe(domain, reliable=False, name="best_effort_camera")
    try:
        msg = camera.stamp(image_msg(astronaut(160, 120), "bgr8"))
        deadline = time.monotonic() + 20
        warning = ""
        while time.monotonic() < deadline and not warning:
            camera.publish(msg)
            camera.spin_for(0.5)
            new = log.read_text()[before:]
            warning = next((line for line in new.splitlines()
                            if "qos_reliability" in line and "/camera/image_raw" in line), "")
        assert warning, f"no QoS warning in the node's log:\n{log.read_text()[before:]}"
        assert "WARN" in warning, warning
        assert stamp_key(msg) not in camera.people  # and indeed nothing came through
    finally:
        camera.close()
    assert process.poll() is None


def test_nodes_stop_cleanly_on_sigint(node_processes, raw_node, compressed_node):
    """Last: Ctrl-C (what ros2 launch sends) ends each node with status 0; no frame failed
    (an exception in the frame path is logged as "frame from ... failed") and no traceback."""
    for which, (process, _, log) in node_processes.items():
        assert process.poll() is None, f"{which} node died:\n{log.read_text()[-3000:]}"
        code = stop_node(process, signal.SIGINT)
        assert code == 0, f"{which} node: exit status {code}\n{log.read_text()[-3000:]}"
        text = log.read_text()
        assert " failed: " not in text and "Traceback" not in text, text[-3000:]


# --------------------------------------------------------------------------- backend, sim time


def test_pt_model_runs_with_the_default_backend_and_sim_time_can_be_set(small_model_files,
                                                                        tmp_path):
    """``backend: auto`` (the default) runs a .pt file with torch; ``use_sim_time``, a
    parameter rclpy owns, can be set at runtime (our parameter checks pass it on) and answers
    still carry their frame's header. (The node's timers, /diagnostics among them, then run on
    /clock, which nobody publishes here.)"""
    from helpers.node_probe import running_node

    with running_node(tmp_path, "-p", f"model_path:={small_model_files[0]}") as (
            process, probe, log):
        result = probe.set_parameter("use_sim_time", True)
        assert result is not None and result.successful, result
        refused = probe.set_parameter("use_sim_timer", True)
        assert refused is not None and not refused.successful
        msg = probe.stamp(image_msg(synthetic_scene(320, 240, 2, seed=9)))
        answer, _ = _answer((process, probe, log), msg)
        assert answer.header == msg.header
        assert "(torch" in log.read_text()  # "configured: model ... (torch:cpu, ...)"
