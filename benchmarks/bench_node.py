"""Node benchmark: emotion_node end to end against the Predictor alone, frame age under a
30 Hz camera, memory over time (issue 4).

One run, one model (preset ``benet``, untrained, exported to ONNX, ONNX Runtime backend), the
astronaut photo at ``--size`` x ``--size``. The node is a subprocess started as the launch file
starts it (``emotion_node --ros-args --params-file config/emotion.yaml -p model_path:=...
-r image:=/camera/image_raw``, every other parameter the params file's default), discovery on
loopback, a domain id of its own. This process plays the camera (a best-effort publisher of
``bgr8`` images, as camera drivers publish) and listens to ``/people_emotions``. The camera
uses config/fastdds_large_data.xml (``--stock-dds``: not): with Fast DDS's default 512 KiB
shared-memory segment a 512x512 bgr8 frame (768 KiB) is fragmented and, over best effort,
mostly lost on the way; the node itself runs with the stock settings.

- ``model_ms``: ``Predictor.predict`` alone on the same image, in this process, while the node
  idles (median of ``--runs``); ``e2e_ms``: publish to receipt of the answer, one frame at a
  time (median of ``--frames``); ``node_overhead_ratio`` = e2e / model (target <= 1.15).
- Camera at 30 Hz for ``--duration`` s, stamps = publish time (ROS clock): ``frame_age_ms`` =
  receipt of an answer minus its input's stamp (median), ``inference_period_ms`` = median time
  between answers, ``stale_frame_ratio`` = age / period (target <= 1.5: the node answers the
  newest frame, never a queued one). ``frames_dropped`` etc. come from the node's
  /diagnostics.
- ``mem_growth_mb``: the node's VmRSS (``/proc/<pid>/status``) at the end of the 30 Hz phase
  minus after its first ``--mem-start`` s (default 5; target < 20).

Usage: python benchmarks/bench_node.py [--json PATH] [--duration 60] [--frames 20] [--runs 10]
       [--size 512] [--preset benet] [--model M.onnx] [--stock-dds] [--quick]
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from common import benchmark_parser, machine, median_ms, photo, write_json
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from tqdm import tqdm

from caer_msgs.msg import PersonEmotionArray
from caer_ros.inference.export import export_onnx
from caer_ros.inference.predictor import Predictor
from caer_ros.ros.image_conversion import bgr_to_image
from training.experiments import untrained_model_file

REPO = Path(__file__).resolve().parents[1]
CAMERA_TOPIC = "/camera/image_raw"
CAMERA_HZ = 30.0
CAMERA_DDS_PROFILE = REPO / "config" / "fastdds_large_data.xml"
START_TIMEOUT_S = 120.0


def make_model(preset: str, size: int, directory: Path) -> Path:
    """An untrained, seeded model of ``preset`` at ``size``, exported to ONNX."""
    pt, _ = untrained_model_file(preset, size, directory, person_sized=False)
    return export_onnx(pt, directory / "bench.onnx")


def node_command(model: Path) -> list[str]:
    """The launch file's command: the console script, the params file, the remapping."""
    script = Path(sys.executable).with_name("emotion_node")
    start = [str(script)] if script.exists() else [sys.executable, "-m",
                                                   "caer_ros.ros.emotion_node"]
    return [*start, "--ros-args", "--params-file", str(REPO / "config" / "emotion.yaml"),
            "-p", f"model_path:={model}", "-r", f"image:={CAMERA_TOPIC}"]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


class Camera:
    """This process's side: publishes frames, keeps the answers with their receipt times."""

    def __init__(self, domain_id: int, image: Image) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("bench_camera", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.clock = self.node.get_clock()
        self.image = image
        self.pub = self.node.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
        self.answers: dict[int, tuple[int, float]] = {}  # stamp ns -> (receipt ns, perf s)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(PersonEmotionArray, "/people_emotions", self._on_people,
                                      10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_people(self, msg: PersonEmotionArray) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.answers.setdefault(stamp, (self.clock.now().nanoseconds, time.perf_counter()))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if msg.status:
            self.diagnostics = {kv.key: kv.value for kv in msg.status[0].values}

    def publish(self) -> int:
        """Publish the image stamped now; returns the stamp (ns)."""
        now = self.clock.now()
        self.image.header.stamp = now.to_msg()
        self.pub.publish(self.image)
        return now.nanoseconds

    def spin_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
        return done()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_for_node(camera: Camera, process: subprocess.Popen, log: Path) -> None:
    """Until the node subscribes to the camera and answers a frame."""
    start = time.monotonic()
    while camera.pub.get_subscription_count() == 0:
        if process.poll() is not None or time.monotonic() - start > START_TIMEOUT_S:
            raise SystemExit(f"the node did not start (exit {process.poll()}):\n"
                             f"{log.read_text()[-3000:]}")
        camera.executor.spin_once(timeout_sec=0.1)
    while True:  # the first frames also warm the node's session up
        stamp = camera.publish()
        if camera.spin_until(lambda s=stamp: s in camera.answers, 10.0):
            return
        if process.poll() is not None or time.monotonic() - start > START_TIMEOUT_S:
            raise SystemExit(f"no answer from the node:\n{log.read_text()[-3000:]}")


def end_to_end_ms(camera: Camera, frames: int, timeout: float) -> list[float]:
    """Publish-to-answer times of ``frames`` frames sent one at a time (lost ones skipped)."""
    times = []
    for _ in tqdm(range(frames), desc="e2e", unit="frame"):
        start = time.perf_counter()
        stamp = camera.publish()
        if camera.spin_until(lambda s=stamp: s in camera.answers, timeout):
            times.append((camera.answers[stamp][1] - start) * 1e3)
        time.sleep(0.05)  # let the node go idle again
    if not times:
        raise SystemExit("no frame was answered")
    return times


def camera_phase(camera: Camera, pid: int, duration: float, mem_start: float
                 ) -> dict[str, object]:
    """The camera at 30 Hz for ``duration`` s: frame ages, answer period, node memory."""
    period = 1.0 / CAMERA_HZ
    stamps: list[int] = []
    rss_start = None
    start = time.monotonic()
    next_frame = start
    samples = []
    with tqdm(total=round(duration), desc="30 Hz camera", unit="s") as bar:
        while (now := time.monotonic()) - start < duration:
            if now >= next_frame:
                stamps.append(camera.publish())
                next_frame = max(next_frame + period, now)
            elapsed = now - start
            if rss_start is None and elapsed >= mem_start:
                rss_start = rss_mb(pid)
            if elapsed >= len(samples) + 1:
                samples.append(rss_mb(pid))
                bar.update(1)
                bar.set_postfix(answers=sum(s in camera.answers for s in stamps[-90:]),
                                rss_mb=f"{samples[-1]:.0f}")
            camera.executor.spin_once(timeout_sec=max(0.0, next_frame - time.monotonic()))
    rss_end = rss_mb(pid)
    camera.spin_until(lambda: False, 1.0)  # the last answers and diagnostics
    answered = sorted((camera.answers[s][0], s) for s in stamps if s in camera.answers)
    if len(answered) < 3:
        raise SystemExit(f"only {len(answered)} answers at {CAMERA_HZ:.0f} Hz")
    received = [r for r, _ in answered]
    ages = [(r - s) / 1e6 for r, s in answered]
    intervals = [(b - a) / 1e6 for a, b in zip(received, received[1:], strict=False)]
    age, interval = statistics.median(ages), statistics.median(intervals)
    return {
        "frames_published": len(stamps),
        "frames_answered": len(answered),
        "frame_age_ms": round(age, 1),
        "frame_age_p90_ms": round(statistics.quantiles(ages, n=10)[-1], 1)
        if len(ages) > 1 else round(age, 1),
        "inference_period_ms": round(interval, 1),
        "stale_frame_ratio": round(age / interval, 3),
        "rss_mb_start": round(rss_start if rss_start is not None else samples[0], 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_max": round(max([*samples, rss_end]), 1),
        "mem_growth_mb": round(rss_end - (rss_start if rss_start is not None else samples[0]),
                               1),
        "node_diagnostics": {k: camera.diagnostics.get(k) for k in (
            "frames_received", "frames_processed", "frames_dropped", "frames_bad",
            "frames_failed", "latency_ms")},
    }


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of 30 Hz camera (memory is read after --mem-start s and "
                             "at the end)")
    parser.add_argument("--mem-start", type=float, default=5.0,
                        help="seconds into the camera phase of the first memory reading")
    parser.add_argument("--frames", type=int, default=20, help="frames timed end to end")
    parser.add_argument("--runs", type=int, default=10, help="timed Predictor.predict runs")
    parser.add_argument("--size", type=int, default=512, help="network input and image size")
    parser.add_argument("--preset", default="benet", help="backbone preset of the model")
    parser.add_argument("--model", type=Path,
                        help="an existing .onnx model file instead of an untrained --preset")
    parser.add_argument("--stock-dds", action="store_true",
                        help="camera with Fast DDS's default settings too (large frames are "
                             "then mostly lost over best effort)")
    parser.add_argument("--domain-id", type=int, help="ROS domain id (default: random 1..100)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: hrnet_w18_small at 128, 3 frames, 4 s of camera "
                             "(figures meaningless)")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.size, args.frames, args.runs = "hrnet_w18_small", 128, 3, 3
        args.duration, args.mem_start = 4.0, 1.0
    if args.duration <= args.mem_start:
        parser.error("--duration must be longer than --mem-start")
    domain = args.domain_id if args.domain_id is not None \
        else random.SystemRandom().randint(1, 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    node_env = dict(os.environ)
    if not args.stock_dds and "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(CAMERA_DDS_PROFILE)  # this process

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = args.model.resolve()
        else:
            print(f"[model] {args.preset} at {args.size}, untrained, exporting to ONNX",
                  flush=True)
            model = make_model(args.preset, args.size, Path(tmp))
        predictor = Predictor.from_file(model)
        image = photo(args.size, args.size)
        figures: dict[str, object] = {
            "machine": machine(), "model": args.model.name if args.model else args.preset,
            "input_size": list(predictor.input_size), "image_size": [args.size, args.size],
            "backend": predictor.backend, "frames": args.frames, "runs": args.runs,
            "duration_s": args.duration, "mem_start_s": args.mem_start,
            "camera_dds_profile": Path(os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")).name
            or None,
        }

        print(f"[node] starting on ROS domain {domain}", flush=True)
        log = Path(tmp) / "node.log"
        with log.open("w") as out:
            process = subprocess.Popen(node_command(model), cwd=REPO, env=node_env,
                                       stdout=out, stderr=subprocess.STDOUT)
        camera = Camera(domain, bgr_to_image(image))
        camera.image.header.frame_id = "bench_camera"
        try:
            wait_for_node(camera, process, log)
            print("[model] Predictor.predict alone (node idle)", flush=True)
            model_ms = median_ms(lambda: predictor.predict(image), args.runs)
            print("[e2e] publish -> answer, one frame at a time", flush=True)
            e2e = end_to_end_ms(camera, args.frames, timeout=max(10.0, 20 * model_ms / 1e3))
            figures["model_ms"] = round(model_ms, 1)
            figures["e2e_ms"] = round(statistics.median(e2e), 1)
            figures["e2e_answered"] = len(e2e)
            figures["node_overhead_ratio"] = round(statistics.median(e2e) / model_ms, 3)
            print(f"[camera] {CAMERA_HZ:.0f} Hz for {args.duration:.0f} s", flush=True)
            figures.update(camera_phase(camera, process.pid, args.duration, args.mem_start))
        finally:
            camera.close()
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            figures["node_exit"] = process.returncode
        if process.returncode != 0:
            print(log.read_text()[-3000:], file=sys.stderr)

    figures["targets"] = {"node_overhead_ratio": "<= 1.15", "stale_frame_ratio": "<= 1.5",
                          "mem_growth_mb": "< 20"}
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
