"""GPU benchmark: which ONNX Runtime GPU providers load, CUDA and TensorRT parity with the CPU,
frames per second on the GPU and the TensorRT engine cache.

For a machine with an NVIDIA GPU. Where there is none (``torch.cuda.is_available()`` is False
and ONNX Runtime has neither the CUDA nor the TensorRT provider, as in CI), it prints one line,
writes ``{"machine", "skipped": "no CUDA device: ...", "providers_available"}`` and exits 0
without building a model.

Otherwise an untrained model of ``--preset`` at ``--size`` (person-sized boxes, as in
bench_inference) is saved and exported to ONNX in a temporary folder, and everything is
measured on the astronaut photo at the input size:

- ``providers_available``: ONNX Runtime's available providers; ``torch_cuda``: whether torch
  has a CUDA device.
- ``providers_loaded.<provider>``: for ``CUDAExecutionProvider`` and
  ``TensorrtExecutionProvider``, the providers requested, the provider the session really got
  (``session``, the predictor's backend; ONNX Runtime falls back to the CPU when a provider's
  libraries are missing), ``loaded`` and the ``error`` of a session that could not start.
  The TensorRT session is the fp16 one with the engine cache below (a second engine build
  for an fp32 check would only cost time).
- Parity with the ONNX Runtime CPU session, same image, threshold 0, at most 16 people:
  ``cuda_fp32_max_diff`` (ORT CUDA, target <= 1e-3) and ``tensorrt_fp16_max_diff`` (ORT
  TensorRT fp16, target <= 1e-2): max |difference| of the emotion scores and the detection
  scores, both sessions read at the CPU's people's boxes (``Predictor.read_boxes``), so that
  the figure compares the networks' outputs, not which peaks won.
  ``cuda_fp32_same_people`` / ``tensorrt_fp16_same_people``: both find as many people, and
  every CPU person whose detection score beats the CPU's 17th peak by more than twice the
  measured detection-score difference (so that no numeric difference within the measured one
  can swap it out) has its own box among the GPU's with IoU >= 0.9; False, too, when no CPU
  person is clear of the cut (nothing verified). The model is untrained: neighbouring peaks lie as
  close as 1e-6, so the people near the cut are ties that any rounding reorders.
  ``parity.<name>`` gives the details: ``people`` (CPU, GPU), ``checked`` (CPU people clear
  of the cut) and ``matched`` (of those, found on the GPU).
- ``fps.<backend>`` = 1000 / median model milliseconds (``Predictor.stage_times``: the
  graph's run including the copy to the device and the outputs back to the host) over
  ``--runs`` runs: ``torch_fp32`` and ``torch_fp16`` (torch backend on ``cuda``), ``ort_cuda``
  and ``ort_tensorrt_fp16`` (ONNX Runtime; the TensorRT session also lists CUDA, when
  available, for any node TensorRT does not take).
- ``tensorrt_cache``: the TensorRT fp16 session with its engine cache on
  (``trt_engine_cache_enable``, ``trt_engine_cache_path``) started twice, each time in a new
  process, timing session creation + the first frame: ``cold_start_s`` (empty cache: builds
  the engine), ``files`` (files in the cache folder after the first start), ``warm_start_s``
  (loads the cache) and ``works`` = both sessions on TensorRT, ``files`` > 0 and
  ``warm_start_s`` < ``cold_start_s`` / 2. Both starts include the CUDA start-up.
- ``not_run.<figure>``: why a figure is None (no CUDA in torch, a provider missing from this
  ONNX Runtime build or not loading, an error).
- ``gpu``: device name, torch's CUDA version, ONNX Runtime's version.

Usage: python benchmarks/bench_gpu.py [--json PATH] [--runs 20] [--size 512] [--preset benet]
       [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import benchmark_parser, machine, photo, write_json

from caer_ros.inference.boxes import iou_matrix
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.runners import CPU_PROVIDER, TENSORRT_PROVIDER

CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_PROVIDERS = (CUDA_PROVIDER, TENSORRT_PROVIDER)
PEOPLE = 16  # people compared for parity
SAME_IOU = 0.9  # a GPU box matches a CPU box at this IoU or more
START_TIMEOUT_S = 600  # one TensorRT start (an engine build of a large model takes minutes)


def available_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def skip_reason(torch_cuda: bool, available: list[str]) -> str | None:
    """Why this machine cannot run the benchmark, or None when it can."""
    if torch_cuda or any(p in available for p in GPU_PROVIDERS):
        return None
    return ("no CUDA device: torch.cuda.is_available() is False and ONNX Runtime has no "
            f"CUDA/TensorRT provider (available: {', '.join(available) or 'none'})")


def error_text(error: BaseException) -> str:
    line = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def significant(value: float | None, digits: int = 3) -> float | None:
    """``value`` to ``digits`` significant digits (differences span many decades)."""
    return None if value is None or not np.isfinite(value) else float(f"{value:.{digits}g}")


def trt_providers(cache: Path, available: list[str]) -> list:
    """TensorRT fp16 with its engine cache in ``cache``, then CUDA (if this build has it) for
    nodes TensorRT does not take, then the CPU."""
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
               "trt_fp16_enable": True}
    return [(TENSORRT_PROVIDER, options), *([CUDA_PROVIDER] if CUDA_PROVIDER in available else []),
            CPU_PROVIDER]


def describe(providers: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


class Figures:
    """The figures dict and the reasons of those that could not be measured."""

    def __init__(self, figures: dict[str, object]) -> None:
        self.figures = figures
        self.not_run: dict[str, str] = {}

    def attempt(self, name: str, measure: Callable[[], object]) -> object:
        """``measure()``, or None with the error as the reason for ``name``."""
        try:
            return measure()
        except Exception as error:  # a GPU stack fails in many ways: report, go on
            self.not_run[name] = error_text(error)
            return None


def open_session(providers_loaded: dict, provider: str, path: Path, providers: list,
                 fp16: bool = False) -> tuple[Predictor | None, str | None]:
    """An ONNX Runtime predictor that really runs on ``provider``, recorded in
    ``providers_loaded``; else None and why."""
    entry = {"requested": describe(providers), "session": None, "loaded": False, "error": None}
    providers_loaded[provider] = entry
    try:
        predictor = Predictor.from_file(path, providers=providers, fp16=fp16)
    except Exception as error:
        entry["error"] = error_text(error)
        return None, f"{provider} session failed: {entry['error']}"
    entry["session"] = predictor.backend
    entry["loaded"] = predictor.backend == f"onnxruntime:{provider}"
    if not entry["loaded"]:
        return None, f"{provider} did not load: the session got {predictor.backend}"
    return predictor, None


def parity(reference: Predictor, device: Predictor, image: np.ndarray) -> dict[str, object]:
    """``device`` against ``reference`` on ``image`` (see the module docstring)."""
    ref = reference.predict(image, detection_threshold=0.0, max_people=PEOPLE)
    beyond = reference.predict(image, detection_threshold=0.0, max_people=PEOPLE + 1)
    cut = float(beyond.detection_scores[PEOPLE]) if len(beyond) > PEOPLE else -np.inf
    at_ref = reference.read_boxes(image, ref.boxes)
    at_device = device.read_boxes(image, ref.boxes)
    detection_diff = float(np.abs(at_ref.detection_scores - at_device.detection_scores)
                           .max(initial=0.0))
    diff = max(detection_diff, float(np.abs(at_ref.scores - at_device.scores).max(initial=0.0)))
    found = device.predict(image, detection_threshold=0.0, max_people=PEOPLE)
    iou = iou_matrix(ref.boxes, found.boxes)
    checked = ref.detection_scores - cut > 2 * detection_diff
    free = np.ones(len(found), dtype=bool)
    matched = 0
    for i in np.flatnonzero(checked):
        candidates = np.where(free, iou[i], -1.0)
        if len(found) and candidates.max() >= SAME_IOU:
            free[int(candidates.argmax())] = False
            matched += 1
    same = len(found) == len(ref) and 0 < matched == int(checked.sum())
    return {"max_diff": significant(diff), "same_people": bool(same),
            "people": [len(ref), len(found)], "checked": int(checked.sum()),
            "matched": matched}


def fps(predictor: Predictor, image: np.ndarray, runs: int) -> float:
    return round(1e3 / predictor.stage_times(image, runs=runs, people=1)["model"], 1)


def timed_start(onnx_path: Path, cache: Path, size: int) -> dict[str, object]:
    """Start the TensorRT session in a new process (``--trt-start``): its seconds and session."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "start.json"
        result = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--size", str(size),
             "--trt-start", str(onnx_path), str(cache), str(out)],
            capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if result.returncode != 0 or not out.exists():
            tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            raise RuntimeError(f"the start process failed (exit {result.returncode}): {tail}")
        return json.loads(out.read_text())


def trt_start(onnx_path: str, cache: str, out: str, size: int) -> None:
    """The child of :func:`timed_start`: session creation + first frame, timed."""
    import onnxruntime  # imported before the clock starts

    image = photo(size, size)
    providers = trt_providers(Path(cache), list(onnxruntime.get_available_providers()))
    start = time.perf_counter()
    predictor = Predictor.from_file(onnx_path, providers=providers, fp16=True)
    predictor.predict(image)
    seconds = time.perf_counter() - start
    Path(out).write_text(json.dumps({"seconds": seconds, "session": predictor.backend}))


def engine_cache(onnx_path: Path, cache: Path, size: int) -> dict[str, object]:
    cache.mkdir(parents=True, exist_ok=True)
    cold = timed_start(onnx_path, cache, size)
    files = sum(1 for p in cache.rglob("*") if p.is_file())
    warm = timed_start(onnx_path, cache, size)
    on_trt = all(s["session"] == f"onnxruntime:{TENSORRT_PROVIDER}" for s in (cold, warm))
    return {"files": files, "cold_start_s": round(cold["seconds"], 2),
            "warm_start_s": round(warm["seconds"], 2),
            "works": bool(on_trt and files > 0 and warm["seconds"] < cold["seconds"] / 2),
            "cold_session": cold["session"], "warm_session": warm["session"]}


def measure(args: argparse.Namespace, torch_cuda: bool, available: list[str],
            report: Figures) -> None:
    from caer_ros.inference.export import export_onnx
    from training.experiments import untrained_model_file

    figures = report.figures
    image = photo(args.size, args.size)  # the input's aspect: no letterbox border
    fps_figures: dict[str, float | None] = dict.fromkeys(
        ("torch_fp32", "torch_fp16", "ort_cuda", "ort_tensorrt_fp16"))
    figures["fps"] = fps_figures
    with tempfile.TemporaryDirectory() as tmp:
        pt_path, _ = untrained_model_file(args.preset, args.size, Path(tmp))
        onnx_path = export_onnx(pt_path, Path(tmp) / "bench.onnx")
        cpu = Predictor.from_file(onnx_path, providers=[CPU_PROVIDER])

        print("[torch] fp32 and fp16 on cuda", flush=True)
        for name, half in (("torch_fp32", False), ("torch_fp16", True)):
            if not torch_cuda:
                report.not_run[f"fps.{name}"] = "torch.cuda.is_available() is False"
                continue
            predictor = report.attempt(f"fps.{name}", lambda half=half: Predictor.from_file(
                pt_path, backend="torch", device="cuda", fp16=half))
            if predictor is not None:
                fps_figures[name] = report.attempt(
                    f"fps.{name}", lambda p=predictor: fps(p, image, args.runs))
            del predictor
        if torch_cuda:
            torch.cuda.empty_cache()  # the torch predictors' memory, before ONNX Runtime's

        loaded: dict[str, dict] = {}
        figures["providers_loaded"] = loaded
        figures["parity"] = {}

        print("[onnxruntime] CUDA", flush=True)
        if CUDA_PROVIDER in available:
            cuda, why = open_session(loaded, CUDA_PROVIDER, onnx_path,
                                     [CUDA_PROVIDER, CPU_PROVIDER])
        else:
            cuda, why = None, f"{CUDA_PROVIDER} is not in this ONNX Runtime build"
            loaded[CUDA_PROVIDER] = {"requested": [CUDA_PROVIDER, CPU_PROVIDER],
                                     "session": None, "loaded": False, "error": why}
        parity_figures(report, "cuda_fp32", cpu, cuda, why, image)
        if cuda is not None:
            fps_figures["ort_cuda"] = report.attempt("fps.ort_cuda",
                                                     lambda p=cuda: fps(p, image, args.runs))
        else:
            report.not_run["fps.ort_cuda"] = why
        del cuda

        print("[onnxruntime] TensorRT fp16: engine cache, cold and warm start", flush=True)
        cache = Path(tmp) / "trt_cache"
        if TENSORRT_PROVIDER in available:
            figures["tensorrt_cache"] = report.attempt(
                "tensorrt_cache", lambda: engine_cache(onnx_path, cache, args.size))
            trt, why = open_session(loaded, TENSORRT_PROVIDER, onnx_path,
                                    trt_providers(cache, available), fp16=True)
        else:
            figures["tensorrt_cache"] = None
            trt, why = None, f"{TENSORRT_PROVIDER} is not in this ONNX Runtime build"
            report.not_run["tensorrt_cache"] = why
            loaded[TENSORRT_PROVIDER] = {"requested": describe(trt_providers(cache, available)),
                                         "session": None, "loaded": False, "error": why}
        parity_figures(report, "tensorrt_fp16", cpu, trt, why, image)
        if trt is not None:
            fps_figures["ort_tensorrt_fp16"] = report.attempt(
                "fps.ort_tensorrt_fp16", lambda p=trt: fps(p, image, args.runs))
        else:
            report.not_run["fps.ort_tensorrt_fp16"] = why
        del trt


def parity_figures(report: Figures, name: str, cpu: Predictor, device: Predictor | None,
                   why: str | None, image: np.ndarray) -> None:
    """``<name>_max_diff`` and ``<name>_same_people`` (None with a reason when ``device`` is
    None or the comparison fails), details under ``parity.<name>``."""
    result = None if device is None else report.attempt(
        f"parity.{name}", lambda: parity(cpu, device, image))
    if device is None:
        report.not_run[f"parity.{name}"] = why or "no session"
    report.figures["parity"][name] = result
    report.figures[f"{name}_max_diff"] = None if result is None else result["max_diff"]
    report.figures[f"{name}_same_people"] = None if result is None else result["same_people"]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per figure (median)")
    parser.add_argument("--size", type=int, default=512, help="network input size")
    parser.add_argument("--preset", default="benet", help="backbone preset of the model")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: hrnet_w18_small at 192, 3 runs (figures meaningless)")
    parser.add_argument("--trt-start", nargs=3, metavar=("ONNX", "CACHE", "OUT"),
                        help=argparse.SUPPRESS)  # the timed child process of tensorrt_cache
    args = parser.parse_args()
    if args.trt_start:
        trt_start(*args.trt_start, size=args.size)
        return
    if args.quick:
        args.runs, args.size, args.preset = 3, 192, "hrnet_w18_small"

    torch_cuda = torch.cuda.is_available()
    available = available_providers()
    reason = skip_reason(torch_cuda, available)
    if reason is not None:
        print(f"skipped: {reason}", flush=True)
        write_json(args.json, {"machine": machine(), "skipped": reason,
                               "providers_available": available})
        return

    torch.manual_seed(0)
    report = Figures({
        "machine": machine(),
        "gpu": {"name": torch.cuda.get_device_name(0) if torch_cuda else None,
                "torch_cuda": torch.version.cuda, "onnxruntime": onnxruntime_version()},
        "size": args.size, "runs": args.runs, "preset": args.preset,
        "torch_cuda": torch_cuda, "providers_available": available,
    })
    measure(args, torch_cuda, available, report)
    report.figures["not_run"] = report.not_run
    report.figures["targets"] = {"cuda_fp32_max_diff": "<= 1e-3",
                                 "tensorrt_fp16_max_diff": "<= 1e-2",
                                 "tensorrt_fp16_same_people": "true",
                                 "tensorrt_cache.works": "true"}
    write_json(args.json, report.figures)


if __name__ == "__main__":
    main()
