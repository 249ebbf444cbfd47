#!/usr/bin/env python3
"""``make demo``: the whole product on this machine, end to end, in one command.

Steps (each prints what it runs; everything goes under ``--out``, default ``outputs/demo/``):

1. scenes: ``python -m training.datasets.synthetic`` draws synthetic CAER scenes (stick
   figures whose emotions follow from face, pose *and* context: party, night, park) in EMOTIC's
   on-disk format;
2. model: ``python -m training.train --config training/configs/demo.yaml`` trains the small
   demo model on them for a fixed time budget, or reuses the one an earlier run trained from
   the same code and config (see *Cache*);
3. export: ``python -m caer_ros.export`` writes it as ONNX (``OUT/model/demo.onnx``);
4. node: ``emotion_node`` starts exactly as ``launch/emotion.launch.py`` starts it
   (:mod:`caer_ros.ros.launch_command`: config/emotion.yaml, the image remapping) with
   ``model_path`` pointing at the export; its log goes to ``OUT/node.log``;
5. camera: this process plays a camera at a fixed rate on ``/camera/image_raw`` (bgr8, best
   effort, as camera drivers publish): the synthetic *test* scenes (never trained on) and
   scikit-image's astronaut photo (at ``PHOTO_SIZE``: frames and overlays stay under Fast
   DDS's 512 KiB shared-memory segment, so no DDS profile is needed; docs/robot.md, QoS
   advice). It listens to ``/people_emotions`` and ``/people_emotions/overlay`` and prints each
   answered frame's people (track id, box, detection score, top emotions; for a synthetic
   scene also what was drawn there);
6. report: ``OUT/overlays/frame_NNN.png`` (the node's overlay images), ``OUT/contact_sheet.png``
   (all of them on one page), ``OUT/frames.json`` (every frame's people) and
   ``OUT/summary.json`` (``frames_sent``, ``frames_answered``, ``frames_dropped``,
   ``median_latency_ms``, ``people_per_frame`` (one entry per frame sent, null when it was not
   answered), and the model, timings and node diagnostics).

The model is trained for minutes on synthetic scenes on a CPU: it shows the product working
end to end; it is not a model of real people's emotions, and the demo says so wherever it
shows a result.

Cache (``--cache``, default ``OUT/cache``): scenes in ``data-<key>``, the training run folder
in ``model-<key>``. A scenes key is the SHA-256 of the generator's source and its arguments; a
model key is the SHA-256 of every ``training/**/*.py``, ``caer_ros/model/*.py``,
``caer_ros/labels.py``, ``caer_ros/atomic_file.py``, the config file, the scenes key, the
training overrides (time budget, ...) and the torch version (:func:`model_key`). A run folder
with ``demo_model.json`` is finished and reused; one without is an interrupted training, which
the same command resumes (``training.train`` continues from its ``last.ckpt``).
``--retrain`` trains again.

Ctrl-C or SIGTERM: the running child (training, export or node) is stopped (the node with
SIGINT, as ``ros2 launch`` does; training and export with SIGTERM), killed when it has not
ended 10 s later; the exit status is 130. Children run in process groups of their own (the
demo stops them in order) and, on Linux, get SIGTERM should this process die without
cleaning up (PR_SET_PDEATHSIG).

``--fast`` (``make demo DEMO_FAST=1``): 24 scenes, a few seconds of training, 5 frames: every
step in about a minute; that model has learnt nothing.

Usage: python scripts/demo.py [--fast] [--out DIR] [--cache DIR] [--retrain] [--rate HZ]
       [--frames N] [--images N] [--budget-minutes M] [--domain-id N]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "demo.yaml"
CAMERA_TOPIC = "/camera/image_raw"
PEOPLE_TOPIC = "/people_emotions"
OVERLAY_TOPIC = "/people_emotions/overlay"
SEED = 0
NODE_START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
PHOTO_SIZE = 384  # 384x384 bgr8: 432 KiB
IOU_MATCH = 0.5  # a detected person is "the drawn one" at this box IoU or more
TOP_EMOTIONS = 3
MODEL_KEY_SOURCES = ("training/**/*.py", "caer_ros/model/*.py", "caer_ros/labels.py",
                     "caer_ros/atomic_file.py")
SCENES_KEY_SOURCES = ("training/datasets/synthetic.py",)
SYNTHETIC_NOTE = ("The model was trained on synthetic scenes (stick figures in a party, night "
                  "or park scene), for minutes on a CPU. It shows the product working end to "
                  "end; it knows nothing about real people's emotions.")


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


@dataclass(frozen=True)
class Plan:
    """How big each step is. ``frames``: synthetic test scenes played (at most the test
    split); the astronaut photo comes after every ``photo_every`` of them and at the end."""

    images: int
    image_size: int
    budget_minutes: float
    frames: int
    rate_hz: float
    photo_every: int = 20
    overrides: tuple[str, ...] = ()


FULL = Plan(images=600, image_size=256, budget_minutes=3.0, frames=45, rate_hz=4.0)
FAST = Plan(images=24, image_size=256, budget_minutes=0.05, frames=4, rate_hz=5.0,
            overrides=("val_every=1",))


# --------------------------------------------------------------------------- processes


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # resolved before any fork: the child only calls it
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child before exec: a process group of its own (a terminal's Ctrl-C reaches only
    the demo, which stops the children in order) and SIGTERM when the demo dies."""
    os.setpgid(0, 0)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class Children:
    """The demo's child processes; :meth:`stop_all` ends every one still running."""

    def __init__(self) -> None:
        self.running: list[tuple[subprocess.Popen, signal.Signals]] = []

    def start(self, command: Sequence[str], stop_signal: signal.Signals = signal.SIGTERM,
              **popen: Any) -> subprocess.Popen:
        print("  $ " + shlex.join(_short(str(c)) for c in command), flush=True)
        process = subprocess.Popen(list(command), cwd=REPO, preexec_fn=_child_setup, **popen)
        self.running.append((process, stop_signal))
        return process

    def run(self, command: Sequence[str], what: str, **popen: Any) -> None:
        """Start ``command``, wait for it; DemoError when it fails."""
        process = self.start(command, **popen)
        code = process.wait()
        self.running = [(p, s) for p, s in self.running if p is not process]
        if code != 0:
            raise DemoError(f"{what} failed (exit status {code}); its output is above")

    def stop_all(self) -> None:
        """Newest first: the stop signal, then SIGKILL after STOP_TIMEOUT_S."""
        while self.running:
            process, stop_signal = self.running.pop()
            stop(process, stop_signal)


def stop(process: subprocess.Popen, stop_signal: signal.Signals) -> int | None:
    if process.poll() is None:
        try:
            process.send_signal(stop_signal)
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _short(text: str) -> str:
    """A path inside the repository printed relative to it (what a user would type)."""
    try:
        return str(Path(text).relative_to(REPO)) if text.startswith(str(REPO)) else text
    except ValueError:
        return text


# --------------------------------------------------------------------------- cache


def source_files(patterns: Sequence[str]) -> list[Path]:
    """The repository files matching ``patterns`` (globs relative to the repo), sorted."""
    files = {p for pattern in patterns for p in REPO.glob(pattern) if p.is_file()}
    return sorted(f for f in files if "__pycache__" not in f.parts)


def _digest(files: Sequence[Path], settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def scenes_args(plan: Plan) -> list[str]:
    return ["--images", str(plan.images), "--seed", str(SEED), "--size", str(plan.image_size)]


def training_overrides(plan: Plan) -> list[str]:
    return [f"budget_minutes={plan.budget_minutes:g}", *plan.overrides]


def scenes_key(plan: Plan) -> str:
    """SHA-256 (16 hex digits) of the generator's source and its arguments."""
    return _digest(source_files(SCENES_KEY_SOURCES), {"args": scenes_args(plan)})


def model_key(plan: Plan, config: Path = CONFIG) -> str:
    """SHA-256 (16 hex digits) of what makes the demo model: the training and model code
    (MODEL_KEY_SOURCES), the config file, the scenes key, the overrides, the torch version."""
    return _digest(source_files(MODEL_KEY_SOURCES), {
        "config": hashlib.sha256(config.read_bytes()).hexdigest(), "scenes": scenes_key(plan),
        "overrides": training_overrides(plan), "torch": _version("torch")})


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


# --------------------------------------------------------------------------- steps 1-3


@dataclass
class ModelInfo:
    pt: Path
    key: str
    reused: bool
    backbone: str
    input_size: list[int]
    train_images: int
    training_s: float
    steps: int
    val_loss: float | None


def ensure_scenes(plan: Plan, cache: Path, children: Children) -> Path:
    """Step 1: the synthetic scenes, generated or found in the cache."""
    folder = cache / f"data-{scenes_key(plan)}"
    done = folder / "demo_scenes.json"
    if done.is_file():
        print(f"[scenes] reusing {plan.images} synthetic scenes in {_short(str(folder))}")
        return folder
    print(f"[scenes] drawing {plan.images} synthetic scenes ({plan.image_size} px)", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    children.run([sys.executable, "-m", "training.datasets.synthetic", "--out", str(folder),
                  *scenes_args(plan)], "scene generation")
    done.write_text(json.dumps({"args": scenes_args(plan)}) + "\n")
    return folder


def ensure_model(plan: Plan, scenes: Path, cache: Path, children: Children, retrain: bool,
                 progress: bool) -> ModelInfo:
    """Step 2: the demo model, trained (or resumed) or found in the cache."""
    from training.datasets.emotic import load_emotic

    key = model_key(plan)
    run = cache / f"model-{key}"
    done = run / "demo_model.json"
    reused = done.is_file() and not retrain
    if reused:
        print(f"[model] reusing the demo model trained before: {_short(str(run))} (key {key}; "
              f"it is trained again when the training code or config change)")
    else:
        done.unlink(missing_ok=True)
        resuming = (run / "last.ckpt").is_file() and not retrain
        print(f"[model] training the demo model on the synthetic scenes for "
              f"{plan.budget_minutes:g} min of training time"
              + (" (resuming an interrupted run)" if resuming else "")
              + f" -> {_short(str(run))}", flush=True)
        command = [sys.executable, "-m", "training.train", "--config", str(CONFIG),
                   "--data", str(scenes), "--out", str(run)]
        command += (["--restart"] if retrain else []) + ([] if progress else ["--no-progress"])
        children.run(command + training_overrides(plan), "training")
        done.write_text(json.dumps({"key": key, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "overrides": training_overrides(plan)}) + "\n")
    pt = run / "best.pt" if (run / "best.pt").is_file() else run / "final.pt"
    config = yaml.safe_load((run / "config.yaml").read_text())
    history = json.loads((run / "history.json").read_text())
    vals = [r["val"]["total"] for r in history if "val" in r]
    backbone = config["model"]["backbone"]
    return ModelInfo(
        pt=pt, key=key, reused=reused,
        backbone=backbone if isinstance(backbone, str) else "slim HRNet (config layout)",
        input_size=list(config["model"]["input_size"]),
        train_images=len(load_emotic(scenes, "train")[0]),
        training_s=float(history[-1]["elapsed_s"]) if history else 0.0,
        steps=sum(int(r["steps"]) for r in history),
        val_loss=min(vals) if vals else None)


def export(model: ModelInfo, out: Path, children: Children) -> Path:
    """Step 3: the ONNX file the node loads."""
    onnx = out / "model" / "demo.onnx"
    onnx.parent.mkdir(parents=True, exist_ok=True)
    print(f"[export] {_short(str(model.pt))} -> {_short(str(onnx))}", flush=True)
    children.run([sys.executable, "-m", "caer_ros.export", "--model", str(model.pt),
                  "--out", str(onnx)], "ONNX export")
    return onnx


# --------------------------------------------------------------------------- frames


@dataclass
class Frame:
    """One camera frame: its pixels, where it came from and, for a synthetic scene, the
    people drawn in it (box, category names)."""

    image: np.ndarray
    source: str
    truth: list[tuple[list[float], list[str]]] | None = None


def camera_frames(scenes: Path, plan: Plan) -> list[Frame]:
    """The synthetic test scenes (in file order), with the astronaut photo after every
    ``plan.photo_every`` of them and at the end."""
    from skimage import data

    from training.datasets.emotic import load_emotic

    records, _ = load_emotic(scenes, "test")
    records = sorted(records, key=lambda r: r.path.name)[:plan.frames]
    photo = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR),
                       (PHOTO_SIZE, PHOTO_SIZE), interpolation=cv2.INTER_AREA)
    astronaut = Frame(photo, "astronaut.png (scikit-image; a real photo)")
    frames = []
    for n, record in enumerate(records, 1):
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DemoError(f"cannot read {record.path}")
        names = record.categories
        truth = [(list(p.box), [names[i] for i in p.category_indices]) for p in record.people]
        frames.append(Frame(image, f"{record.path.name} (synthetic test scene)", truth))
        if n % plan.photo_every == 0 and n < len(records):
            frames.append(astronaut)
    frames.append(astronaut)
    return frames


# --------------------------------------------------------------------------- node, camera


class Camera:
    """This process's ROS side: plays frames on the camera topic and keeps the node's answers
    (people and overlay, by header stamp, with their receipt time)."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image

        from caer_msgs.msg import PersonEmotionArray

        self.context = rclpy.Context()
        # The demo handles Ctrl-C itself: rclpy must not take SIGINT over.
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("demo_camera", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.clock = self.node.get_clock()
        self.pub = self.node.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
        self.people: dict[int, tuple[Any, float]] = {}  # stamp ns -> (message, perf_counter)
        self.overlays: dict[int, Any] = {}
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(PersonEmotionArray, PEOPLE_TOPIC, self._on_people, 50)
        self.node.create_subscription(Image, OVERLAY_TOPIC, self._on_overlay, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._last_stamp = 0

    @staticmethod
    def _key(msg: Any) -> int:
        return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    def _on_people(self, msg: Any) -> None:
        self.people.setdefault(self._key(msg), (msg, time.perf_counter()))

    def _on_overlay(self, msg: Any) -> None:
        self.overlays.setdefault(self._key(msg), msg)

    def _on_diagnostics(self, msg: Any) -> None:
        if msg.status:
            self.diagnostics = {kv.key: kv.value for kv in msg.status[0].values}

    def publish(self, image: np.ndarray) -> tuple[int, float]:
        """Publish ``image`` (bgr8) stamped now; (stamp ns, perf_counter at publish)."""
        from builtin_interfaces.msg import Time

        from caer_ros.ros.image_conversion import bgr_to_image

        stamp = max(self.clock.now().nanoseconds, self._last_stamp + 1)
        self._last_stamp = stamp
        msg = bgr_to_image(image)
        msg.header.stamp = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
        msg.header.frame_id = "demo_camera"
        sent = time.perf_counter()
        self.pub.publish(msg)
        return stamp, sent

    def answered(self, stamp: int) -> bool:
        return stamp in self.people and stamp in self.overlays

    def spin_until(self, done: Callable[[], bool], timeout: float,
                   process: subprocess.Popen | None = None) -> bool:
        from caer_ros.ros.spinning import spin_until

        return spin_until(self.executor, done, timeout, process, step=0.02)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def start_node(onnx: Path, out: Path, domain_id: int, children: Children
               ) -> tuple[subprocess.Popen, Path]:
    """Step 4: emotion_node as the launch file starts it; its output to ``OUT/node.log``."""
    from caer_ros.ros.launch_command import emotion_node_command

    log = out / "node.log"
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1"}
    print(f"[node] starting emotion_node (ROS domain {domain_id}, discovery on this machine "
          f"only), as launch/emotion.launch.py does; log: {_short(str(log))}", flush=True)
    with log.open("w") as stream:
        process = children.start(emotion_node_command(CAMERA_TOPIC, model_path=onnx),
                                 stop_signal=signal.SIGINT, env=env, stdout=stream,
                                 stderr=subprocess.STDOUT)
    print(f"[node] started (pid {process.pid})", flush=True)
    return process, log


def wait_for_node(camera: Camera, node: subprocess.Popen, log: Path, first: np.ndarray) -> float:
    """Until the node hears the camera and has answered one frame (people and overlay; not
    counted in the summary). Seconds it took."""
    start = time.monotonic()

    def failed(reason: str) -> DemoError:
        tail = log.read_text()[-2000:] if log.is_file() else ""
        return DemoError(f"{reason} (exit status {node.poll()}); node log {log}:\n{tail}")

    if not camera.spin_until(lambda: camera.pub.get_subscription_count() > 0,
                             NODE_START_TIMEOUT_S, node):
        raise failed("the node did not subscribe to the camera topic")
    while time.monotonic() - start < NODE_START_TIMEOUT_S:
        stamp, _ = camera.publish(first)  # best effort: repeated until answered
        if camera.spin_until(lambda s=stamp: camera.answered(s), 2.0, node):
            return time.monotonic() - start
        if node.poll() is not None:
            break
    raise failed("the node did not answer")


@dataclass
class Sent:
    frame: Frame
    stamp: int
    sent: float
    printed: bool = False


def play(camera: Camera, frames: list[Frame], rate_hz: float, node: subprocess.Popen,
         report: Callable[[int, Sent, Any, float], None]) -> list[Sent]:
    """Step 5: publish ``frames`` at ``rate_hz``; ``report(index, sent, people, latency_ms)``
    for each answer, as it comes. Then wait for the last answers and overlays (until every
    frame has both or nothing new came for 3 s)."""
    sent: list[Sent] = []
    start = time.monotonic()

    def report_new() -> None:
        for n, item in enumerate(sent):
            if not item.printed and item.stamp in camera.people:
                msg, received = camera.people[item.stamp]
                item.printed = True
                report(n, item, msg, (received - item.sent) * 1e3)

    for n, frame in enumerate(frames):
        due = start + n / rate_hz
        while (left := due - time.monotonic()) > 0:
            camera.executor.spin_once(timeout_sec=min(left, 0.02))
            report_new()
        stamp, at = camera.publish(frame.image)
        sent.append(Sent(frame, stamp, at))
        if node.poll() is not None:
            raise DemoError(f"the node stopped (exit status {node.poll()})")

    def received() -> int:
        return sum((s.stamp in camera.people) + (s.stamp in camera.overlays) for s in sent)

    last_news, count = time.monotonic(), -1
    while time.monotonic() - last_news < 3.0 and received() < 2 * len(sent):
        camera.executor.spin_once(timeout_sec=0.02)
        report_new()
        if received() != count:
            count, last_news = received(), time.monotonic()
    camera.spin_until(lambda: False, 1.2)  # one more /diagnostics message
    report_new()
    return sent


# --------------------------------------------------------------------------- report


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    from caer_ros.inference.boxes import iou_matrix

    return float(iou_matrix(np.asarray(a), np.asarray(b))[0, 0])


def match_truth(boxes: Sequence[Sequence[float]],
                truth: Sequence[tuple[list[float], list[str]]]) -> list[int | None]:
    """For each detected box (most confident first), the index of the drawn person it covers
    with IoU >= IOU_MATCH (each drawn person used once), or None."""
    used: set[int] = set()
    found: list[int | None] = []
    for box in boxes:
        scored = [(iou(box, t[0]), j) for j, t in enumerate(truth) if j not in used]
        best = max(scored, default=(0.0, -1))
        if best[0] >= IOU_MATCH:
            used.add(best[1])
            found.append(best[1])
        else:
            found.append(None)
    return found


def describe_people(msg: Any, truth: list[tuple[list[float], list[str]]] | None
                    ) -> list[dict[str, Any]]:
    """The people of one PersonEmotionArray as plain data (for printing and frames.json)."""
    categories = list(msg.categories)
    boxes = [[p.x_min, p.y_min, p.x_max, p.y_max] for p in msg.people]
    matches = match_truth(boxes, truth) if truth is not None else [None] * len(boxes)
    people = []
    for person, box, match in zip(msg.people, boxes, matches, strict=True):
        scores = [float(s) for s in person.scores]
        order = sorted(range(len(scores)), key=lambda j: -scores[j])[:TOP_EMOTIONS]
        entry: dict[str, Any] = {
            "id": person.id, "box": [round(float(v), 1) for v in box],
            "detection_score": round(float(person.detection_score), 3),
            "labels": list(person.labels),
            "top": [[categories[j], round(scores[j], 3)] for j in order],
            "scores": dict(zip(categories, (round(s, 4) for s in scores), strict=True)),
        }
        if truth is not None:
            entry["drawn_as"] = truth[match][1] if match is not None else None
        people.append(entry)
    return people


def print_frame(n: int, total: int, item: Sent, people: list[dict[str, Any]],
                latency_ms: float) -> None:
    frame = item.frame
    drawn = f", {_count(len(frame.truth))} drawn" if frame.truth is not None else ""
    print(f"frame {n + 1:3d}/{total}  {frame.source}{drawn}  ->  {_count(len(people))} "
          f"in {latency_ms:.0f} ms")
    for p in people:
        x1, y1, x2, y2 = (round(v) for v in p["box"])
        top = "  ".join(f"{name} {score:.2f}{'*' if name in p['labels'] else ''}"
                        for name, score in p["top"])
        print(f"    id {p['id'] or '-':>3}  box ({x1:3d},{y1:3d})-({x2:3d},{y2:3d})  "
              f"person {p['detection_score']:.2f}  {top}")
        if frame.truth is not None:
            said = ", ".join(p["drawn_as"]) if p["drawn_as"] else \
                ("-" if p["drawn_as"] is not None else "no drawn person at this box")
            print(f"{'':14}drawn as: {said}")
    if frame.truth is not None:
        missed = len(frame.truth) - sum(p.get("drawn_as") is not None for p in people)
        if missed:
            print(f"{'':14}({_count(missed)} drawn but not found)")
    sys.stdout.flush()


def _count(people: int) -> str:
    return f"{people} {'person' if people == 1 else 'people'}"


def contact_sheet(tiles: Sequence[tuple[np.ndarray, str]], title: Sequence[str],
                  tile: int = 240, columns: int = 6) -> np.ndarray:
    """One BGR image: ``title`` lines on top, then each (image, caption) scaled into a
    ``tile`` x ``tile`` cell with its caption below, ``columns`` cells per row."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    caption_h, title_line = 22, 26
    top = 12 + title_line * len(title)
    width = max(columns * tile, 1200)
    sheet = np.full((top + rows * (tile + caption_h), width, 3), 255, np.uint8)
    for i, line in enumerate(title):
        cv2.putText(sheet, line, (10, 8 + title_line * (i + 1) - 6), font, 0.6 if i else 0.75,
                    (0, 0, 0) if i else (20, 20, 160), 1 if i else 2, cv2.LINE_AA)
    for n, (image, caption) in enumerate(tiles):
        r, c = divmod(n, columns)
        y, x = top + r * (tile + caption_h), c * tile
        h, w = image.shape[:2]
        s = tile / max(h, w)
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA)
        cell = np.full((tile, tile, 3), 235, np.uint8)
        oy, ox = (tile - small.shape[0]) // 2, (tile - small.shape[1]) // 2
        cell[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        sheet[y:y + tile, x:x + tile] = cell
        cv2.putText(sheet, caption, (x + 4, y + tile + 15), font, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return sheet


def write_json(path: Path, data: Any) -> None:
    from caer_ros.atomic_file import atomic_write

    with atomic_write(path) as stream:
        stream.write((json.dumps(data, indent=2) + "\n").encode())


@dataclass
class Results:
    frames: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def report(out: Path, sent: list[Sent], camera: Camera, results: Results, model: ModelInfo,
           plan: Plan, timings: dict[str, float]) -> dict[str, Any]:
    """Step 6: overlays, contact sheet, frames.json, summary.json."""
    from caer_ros.ros.image_conversion import image_to_bgr

    overlays = out / "overlays"
    tiles = []
    for entry, item in zip(results.frames, sent, strict=True):
        overlay = camera.overlays.get(item.stamp)
        if overlay is None:
            continue
        image = np.ascontiguousarray(image_to_bgr(overlay))
        path = overlays / f"frame_{entry['frame']:03d}.png"
        cv2.imwrite(str(path), image)
        entry["overlay"] = str(path.relative_to(out))
        people = entry["people"]
        name = "astronaut" if item.frame.truth is None else \
            f"scene {int(Path(entry['source'].split()[0]).stem.rsplit('_', 1)[-1])}"
        tiles.append((image, f"{entry['frame']}: {name}, {_count(len(people))}"))
    answered = [e for e in results.frames if e["answered"]]
    n_drawn = sum(len(s.frame.truth) for s in sent if s.frame.truth is not None
                  and s.stamp in camera.people)
    n_found = sum(1 for e in answered for p in e["people"] if p.get("drawn_as") is not None)
    title = [
        "caer_ros demo: emotion_node answers on a replayed camera stream",
        "The model was trained on SYNTHETIC scenes (stick figures) for "
        f"{model.training_s / 60:.1f} min on a CPU: not a model of real emotions.",
        f"{len(answered)}/{len(sent)} frames answered, median latency "
        f"{_median(results.latencies):.0f} ms; {n_found}/{n_drawn} drawn people found.",
    ]
    if tiles:
        cv2.imwrite(str(out / "contact_sheet.png"), contact_sheet(tiles, title))
    diagnostics = {k: camera.diagnostics.get(k) for k in (
        "frames_received", "frames_processed", "frames_dropped", "frames_bad", "frames_failed",
        "backend")}
    summary = {
        "frames_sent": len(sent),
        "frames_answered": len(answered),
        "frames_dropped": len(sent) - len(answered),
        "median_latency_ms": round(_median(results.latencies), 1) if results.latencies
        else None,
        "people_per_frame": [len(e["people"]) if e["answered"] else None
                             for e in results.frames],
        "trained_on": "synthetic scenes",
        "note": SYNTHETIC_NOTE,
        "synthetic_people": {"drawn": n_drawn, "found": n_found, "iou_threshold": IOU_MATCH},
        "model": {
            "file": "model/demo.onnx", "trained_from": _short(str(model.pt)),
            "backbone": model.backbone, "input_size": model.input_size,
            "training_images": model.train_images, "training_s": round(model.training_s, 1),
            "training_steps": model.steps, "best_val_loss": model.val_loss,
            "cache_key": model.key, "reused_from_cache": model.reused,
        },
        "camera": {"topic": CAMERA_TOPIC, "rate_hz": plan.rate_hz, "encoding": "bgr8",
                   "synthetic_frames": sum(s.frame.truth is not None for s in sent),
                   "photo_frames": sum(s.frame.truth is None for s in sent)},
        "node_diagnostics": diagnostics,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "outputs": {"overlays": "overlays/", "contact_sheet": "contact_sheet.png",
                    "frames": "frames.json", "node_log": "node.log"},
    }
    write_json(out / "frames.json", results.frames)
    write_json(out / "summary.json", summary)
    return summary


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog="Steps, outputs, the cache and Ctrl-C: see the docstring of scripts/demo.py.")
    parser.add_argument("--fast", action="store_true",
                        help="short run: every step, few scenes and frames, seconds of training")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "demo",
                        help="output folder (default outputs/demo)")
    parser.add_argument("--cache", type=Path, help="cache folder (default OUT/cache)")
    parser.add_argument("--retrain", action="store_true", help="train again, ignore the cache")
    parser.add_argument("--rate", type=float, help="camera frames per second")
    parser.add_argument("--frames", type=int, help="synthetic test scenes to play")
    parser.add_argument("--images", type=int, help="synthetic scenes to draw (train/val/test)")
    parser.add_argument("--budget-minutes", type=float, help="training time budget")
    parser.add_argument("--domain-id", type=int,
                        help="ROS domain id (default: a random one in 1..100)")
    args = parser.parse_args(argv)
    for name in ("rate", "frames", "budget_minutes"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.images is not None and args.images < 10:
        parser.error("--images must be at least 10")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    plan = FAST if args.fast else FULL
    changes = {k: v for k, v in {"rate_hz": args.rate, "frames": args.frames,
                                 "images": args.images,
                                 "budget_minutes": args.budget_minutes}.items() if v is not None}
    return dataclasses.replace(plan, **changes)


def run(args: argparse.Namespace, children: Children, cleanup: list[Callable[[], None]]) -> int:
    plan = make_plan(args)
    out = args.out.resolve()
    cache = (args.cache or out / "cache").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    progress = sys.stdout.isatty()
    timings: dict[str, float] = {}
    started = time.monotonic()

    def step(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = now - since
        return now

    print(f"caer_ros demo{' (fast mode)' if args.fast else ''}: outputs in {_short(str(out))}")
    print(f"NOTE: {SYNTHETIC_NOTE}", flush=True)
    if args.fast:
        print("Fast mode: the model trains for seconds and has learnt nothing; expect few or "
              "no people. Every step still runs.", flush=True)
    print(flush=True)
    t = time.monotonic()
    scenes = ensure_scenes(plan, cache, children)
    t = step("scenes", t)
    model = ensure_model(plan, scenes, cache, children, args.retrain, progress)
    print(f"[model] {model.backbone} at {model.input_size[0]}x{model.input_size[1]}, "
          f"{model.steps} training steps in {model.training_s:.0f} s on "
          f"{model.train_images} synthetic scenes")
    t = step("model", t)
    onnx = export(model, out, children)
    t = step("export", t)
    frames = camera_frames(scenes, plan)

    domain = args.domain_id if args.domain_id is not None \
        else random.SystemRandom().randint(1, 100)
    # The camera first: its imports (rclpy, messages) then happen before the node starts, so a
    # Ctrl-C right after "[node] started" never lands inside an import, where Python drops it.
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    camera = Camera(domain)
    cleanup.append(camera.close)
    node, log = start_node(onnx, out, domain, children)
    ready_s = wait_for_node(camera, node, log, frames[0].image)
    print(f"[node] ready: first answer after {ready_s:.1f} s")
    t = step("node_start", t)

    overlays = out / "overlays"
    overlays.mkdir(exist_ok=True)
    for old in overlays.glob("frame_*.png"):
        old.unlink()
    results = Results()
    print(f"[camera] playing {len(frames)} frames at {plan.rate_hz:g} Hz on {CAMERA_TOPIC}; "
          f"answers from {PEOPLE_TOPIC}\n"
          f"         per person: the node's track id (kept while a box overlaps the one in the "
          f"frame before: here\n         the scene changes every frame), box (pixels), "
          f"detection score, top {TOP_EMOTIONS} emotions\n         (* = at or above the "
          f"model's threshold: in the message's labels)\n", flush=True)

    def on_answer(n: int, item: Sent, msg: Any, latency_ms: float) -> None:
        people = describe_people(msg, item.frame.truth)
        results.latencies.append(latency_ms)
        results.frames[n].update(answered=True, latency_ms=round(latency_ms, 1), people=people)
        print_frame(n, len(frames), item, people, latency_ms)

    results.frames = [{"frame": n + 1, "source": f.source, "answered": False, "people": [],
                       **({"drawn": [{"box": b, "categories": c} for b, c in f.truth]}
                          if f.truth is not None else {})}
                      for n, f in enumerate(frames)]
    sent = play(camera, frames, plan.rate_hz, node, on_answer)
    t = step("stream", t)
    stop(node, signal.SIGINT)
    timings["total"] = time.monotonic() - started
    summary = report(out, sent, camera, results, model, plan, timings)

    print(f"\nsummary ({_short(str(out / 'summary.json'))}):")
    print(f"  frames sent {summary['frames_sent']}, answered {summary['frames_answered']}, "
          f"dropped {summary['frames_dropped']}; median latency "
          f"{summary['median_latency_ms']} ms (publish to answer)")
    found = summary["synthetic_people"]
    print(f"  drawn people found (box IoU >= {IOU_MATCH}): {found['found']} of {found['drawn']}")
    print(f"  overlays: {_short(str(overlays))}/  contact sheet: "
          f"{_short(str(out / 'contact_sheet.png'))}")
    print("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"NOTE: {SYNTHETIC_NOTE}")
    return 0 if summary["frames_answered"] > 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    children = Children()
    cleanup: list[Callable[[], None]] = []
    code = 1
    try:
        code = run(args, children, cleanup)
    except KeyboardInterrupt:
        print("\n[demo] interrupted: stopping the child processes", flush=True)
        code = 130
    except (DemoError, ValueError) as error:
        print(f"[demo] error: {error}", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop_all()
        for close in cleanup:
            close()
    return code


if __name__ == "__main__":
    sys.exit(main())
