"""Deployment benchmark: which setting to run on a CPU robot (issue 18).

Five settings side by side in one run, on this machine:

- ``torch_eager``: the model file (.pt) in torch;
- ``ort_fp32``: its ONNX export in ONNX Runtime (the reference of every speedup);
- ``ort_int8``: the export quantized to int8 (``python -m caer_ros.export --int8``);
- ``fast``: the fast head mode (``--no-fuse-scales``: the 1/2-resolution branches are not
  computed, everything is read from the 1/4 outputs), ONNX Runtime float32;
- ``int8_fast``: both.

Speed, on the exact ``benet`` at ``--size`` (512), untrained (speed does not depend on the
weights; its size head is biased to person-sized boxes as in ``bench_inference.py``): the
forward pass in ms per frame (median of ``--runs``), the speedup over ``ort_fp32``, the
effective GFLOP/s (the setting's float FLOPs, ``torch.utils.flop_counter``, over its time) and
its fraction of the *ceiling*: the best GFLOP/s of a lone 3x3 convolution (torch and ONNX
Runtime, a few shapes), measured in the same run. The int8 graphs are calibrated on photos
shipped with scikit-image.

Quality, on a small model trained with both scales in the ``bench_learn.py`` setup
(``hrnet_cpu``, 128x128, synthetic CAER scenes, plus CBAM attention as in ``benet`` and
``model.half_resolution=true``; ``--budget-minutes`` of training), evaluated on its test split
with the evaluator (the node's Predictor code path): ER mAP, PD AP, OER (x100) per setting, and
each setting's drop against ``ort_fp32`` in points (positive = worse). The int8 graphs are
calibrated on ``--calibration-images`` images of the training split alone (never the test
images the drop is scored on).

Where the time goes: ONNX Runtime's profiler on ``ort_fp32`` and ``ort_int8`` (``benet``):
time per operator type and the share spent in the CBAM attention blocks (nodes under
``attention_block``). The speed model's files stay in ``--out``/speed.

JSON keys: ``int8_speedup``, ``fast_speedup``, ``best_speedup``, ``best_setting`` (the fastest
setting within 1.0 point of ``ort_fp32`` on ER mAP and PD AP), ``int8_er_drop``,
``int8_pd_drop``, ``best_er_drop``, ``best_pd_drop``, ``ceiling_gflops``, ``ceiling_fraction``
(of the best setting), ``ort_speedup`` (torch eager / ONNX Runtime float32), ``speed``,
``quality``, ``ort_profile``, ``targets``, ``targets_met``.

Usage::

    python benchmarks/bench_deploy.py [--json PATH] [--runs 5] [--size 512]
        [--budget-minutes 8] [--calibration-images 16] [--out DIR] [--quick]

``--quick`` is a smoke run (the small model alone, 64x64, 40 training steps; its files in
``--out``: ``runs/full/final.pt``, ``ort_fp32.onnx``, ``ort_int8.onnx``, ``fast.onnx``,
``int8_fast.onnx``, the data in ``data/full``): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import common
import numpy as np
import torch
from common import format_table, machine, median_ms, photo
from torch.utils.flop_counter import FlopCounterMode

from caer_ros.image_file import read_image
from caer_ros.inference.export import export_with_summary
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.runners import physical_cores
from caer_ros.model import (
    read_model_file,
)
from caer_ros.model.checkpoint import load_model_file
from training.datasets.splits import load_split
from training.datasets.synthetic_variants import make_variants
from training.evaluation.evaluate import evaluate
from training.experiments import ArmSetup, arm_run, split_images_folder, untrained_model_file

SETTINGS = ("torch_eager", "ort_fp32", "ort_int8", "fast", "int8_fast")
REFERENCE = "ort_fp32"
EXPORTS = {"ort_fp32": {}, "ort_int8": {"int8": True}, "fast": {"fuse_scales": False},
           "int8_fast": {"int8": True, "fuse_scales": False}}
PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
          "rocket.jpg")
# The quality model: bench_learn's config and data (scenes, side in pixels), both scales
QUALITY_CONFIG = common.CONFIGS / "bench_learn.yaml"
QUALITY_DATA = (1400, 128)
QUALITY_OVERRIDES = ("model.half_resolution=true", "model.attention=true")
# --quick: 40 scenes of 64 px, 40 steps (~20 s): the heatmap has peaks at the people, enough
# for the int8 tests (test/test_deploy_modes.py) that read this run's files.
QUICK_DATA = (40, 64)
QUICK_TRAINING = ("model.input_size=[64,64]", "epochs=40", "val_every=1000", "calibrate=false")
METRICS = {"er": "er_map", "pd": "pd_ap", "oer": "oer_map"}
MAX_DROP = 1.0  # points of ER mAP and PD AP a setting may lose against ort_fp32
TARGETS = {"int8_speedup": ">= 1.4", "fast_speedup": ">= 1.25", "best_speedup": ">= 2.0",
           "int8_er_drop": "<= 1.0", "int8_pd_drop": "<= 1.0", "best_er_drop": "<= 1.0",
           "best_pd_drop": "<= 1.0", "ort_speedup": ">= 1.5"}


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- model files


def export_settings(pt_path: Path, folder: Path, calibration: Path, images: int,
                    verify: bool = True) -> dict[str, Path]:
    """The model file and its four ONNX exports: setting name -> file."""
    files = {"torch_eager": pt_path}
    for name, options in EXPORTS.items():
        summary = export_with_summary(
            pt_path, folder / f"{name}.onnx", verify=verify,
            fuse_scales=options.get("fuse_scales"),
            int8_calibration=calibration if options.get("int8") else None,
            calibration_images=images,
            progress=(lambda line, name=name: say(f"[export] {name}: {line}"))
            if options.get("int8")
            else None)
        files[name] = Path(summary.path)
        say(f"[export] {name}: {summary.describe()}")
    return files


def graph_gflops(pt_path: Path, fast: bool) -> float:
    """Float FLOPs of the network's map heads (what the graph runs), GFLOP, batch 1."""
    model, info = load_model_file(pt_path)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, *info.config.input_size), classifiers=False, half=not fast)
    return counter.get_total_flops() / 1e9


# --------------------------------------------------------------------------- speed


def conv_ceiling(runs: int) -> dict[str, float]:
    """GFLOP/s of a lone 3x3 convolution (C -> C, stride 1) in torch and ONNX Runtime, the
    best over a few shapes; the ``best`` entry is the ceiling."""
    import onnxruntime as ort

    figures: dict[str, float] = {}
    for channels, side in ((64, 128), (128, 64), (256, 64)):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
        x = torch.randn(1, channels, side, side)
        flops = 2 * channels * channels * 9 * side * side
        with torch.inference_mode():
            torch_ms = median_ms(lambda conv=conv, x=x: conv(x), runs * 4, warmup=2)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(conv, (x,), buffer, dynamo=False, opset_version=17,
                              input_names=["x"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = physical_cores()
        options.log_severity_level = 3
        session = ort.InferenceSession(buffer.getvalue(), options,
                                       providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        ort_ms = median_ms(lambda s=session, f=feed: s.run(None, f), runs * 4, warmup=2)
        key = f"{channels}x{side}x{side}"
        figures[f"torch_{key}"] = round(flops / torch_ms / 1e6, 1)
        figures[f"ort_{key}"] = round(flops / ort_ms / 1e6, 1)
    figures["best"] = max(figures.values())
    return figures


def timed(files: dict[str, Path], image: np.ndarray, runs: int) -> dict[str, float]:
    """Median forward ms per frame of each setting (the graph alone, as ``stage_times``)."""
    times = {}
    for name in SETTINGS:
        predictor = Predictor.from_file(files[name])
        times[name] = predictor.stage_times(image, runs=runs, people=1)["model"]
        say(f"[speed] {name}: {times[name]:.1f} ms ({predictor.backend})")
    return times


def speed_rows(times: dict[str, float], gflops: dict[str, float],
               ceiling: float) -> dict[str, dict[str, float | None]]:
    rows = {}
    for name in SETTINGS:
        work = gflops["fast" if name in ("fast", "int8_fast") else "full"]
        rate = work / (times[name] / 1e3)
        rows[name] = {"ms": round(times[name], 1),
                      "speedup": round(times[REFERENCE] / times[name], 3),
                      "gflop": round(work, 2), "gflops_per_s": round(rate, 1),
                      "ceiling_fraction": round(rate / ceiling, 3)}
    return rows


def ort_profile(path: Path, image: np.ndarray, runs: int = 3) -> dict[str, object]:
    """ONNX Runtime's profiler on ``path``: ms per frame by operator type (top 12) and the
    share of the node time spent in the attention blocks."""
    import onnxruntime as ort

    from caer_ros.inference.preprocess import preprocess

    predictor = Predictor.from_file(path)
    batch, _ = preprocess(image, predictor.input_size, mean=predictor.config.input_mean,
                          std=predictor.config.input_std)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = physical_cores()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {"images": batch})
        for _ in range(runs):
            session.run(None, {"images": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    attention = 0.0
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        by_op[event["args"]["op_name"]] += event["dur"]
        if "attention_block" in event["name"]:
            attention += event["dur"]
    total = sum(by_op.values())
    frames = runs + 1
    return {"node_ms_per_frame": round(total / frames / 1e3, 1),
            "attention_share": round(attention / total, 3) if total else None,
            "by_op": {op: {"ms": round(us / frames / 1e3, 1), "share": round(us / total, 3)}
                      for op, us in by_op.most_common(12)}}


# --------------------------------------------------------------------------- quality


def quality(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, Path]]:
    """Train the small model (bench_learn setup, both scales), export every setting and
    evaluate each on the test split. Returns the figures and the setting -> file map."""
    images, size = QUICK_DATA if args.quick else QUALITY_DATA
    say(f"[quality] {images} synthetic scenes of {size} px -> {args.out / 'data'}")
    data = make_variants(args.out / "data", images, args.seed, size, {})["full"]
    setup = ArmSetup(QUALITY_CONFIG,
                     (*QUALITY_OVERRIDES, *(QUICK_TRAINING if args.quick else ())), args.seed,
                     args.budget_minutes, "center", "final" if args.quick else "best",
                     args.progress)
    trained = arm_run("full", data, args.out / "runs" / "full", setup)
    model = Path(trained["model"])
    # int8 calibration on the training split only: the test images score the drop
    calibration = split_images_folder(data, "train", args.out / "calibration_train")
    files = export_settings(model, args.out, calibration, args.calibration_images,
                            verify=not args.quick)
    records, _ = load_split(data, "emotic", "test")
    # arm_run evaluated the model file itself (torch) with the same evaluator.
    rows: dict[str, dict[str, object]] = {"torch_eager": {m: trained[m] for m in METRICS.values()}}
    for name in SETTINGS[1:]:
        result = evaluate(Predictor.from_file(files[name]), records, progress=args.progress)
        rows[name] = {"er_map": round(result.er_map, 2), "pd_ap": round(result.pd_ap, 2),
                      "oer_map": round(result.oer_map, 2)}
    for name, row in rows.items():
        say(f"[quality] {name}: ER {row['er_map']:.1f}  PD {row['pd_ap']:.1f}  "
            f"OER {row['oer_map']:.1f}")
    for row in rows.values():  # points lost against ort_fp32 (positive = worse)
        for short, metric in METRICS.items():
            row[f"{short}_drop"] = round(rows[REFERENCE][metric] - row[metric], 2)
    meta = {"steps": trained["steps"], "train_s": trained["train_s"],
            "test_images": trained["test_images"], "test_people": trained["test_people"]}
    return {"rows": rows, "training": meta}, files


# --------------------------------------------------------------------------- report


def headline(speed: dict[str, dict], rows: dict[str, dict]) -> dict[str, object]:
    """The issue's top-level figures from the speed rows and the quality rows."""
    within = [name for name in SETTINGS if name != "torch_eager"
              and rows[name]["er_drop"] <= MAX_DROP and rows[name]["pd_drop"] <= MAX_DROP]
    best = max(within, key=lambda n: speed[n]["speedup"]) if within else None
    figures: dict[str, object] = {
        "int8_speedup": speed["ort_int8"]["speedup"],
        "fast_speedup": speed["fast"]["speedup"],
        "best_setting": best,
        "best_speedup": speed[best]["speedup"] if best else None,
        "int8_er_drop": rows["ort_int8"]["er_drop"],
        "int8_pd_drop": rows["ort_int8"]["pd_drop"],
        "fast_er_drop": rows["fast"]["er_drop"],
        "fast_pd_drop": rows["fast"]["pd_drop"],
        "best_er_drop": rows[best]["er_drop"] if best else None,
        "best_pd_drop": rows[best]["pd_drop"] if best else None,
        "ceiling_fraction": speed[best]["ceiling_fraction"] if best else None,
        "ort_speedup": round(speed["torch_eager"]["ms"] / speed["ort_fp32"]["ms"], 3),
    }
    return figures


def met(figures: dict[str, object]) -> dict[str, bool]:
    out = {}
    for key, target in TARGETS.items():
        value = figures.get(key)
        op, bound = target.split()
        out[key] = value is not None and (value >= float(bound) if op == ">=" else
                                          value <= float(bound))
    return out


def table(figures: dict[str, object]) -> str:
    rows = [("setting", "ms/frame", "speedup", "GFLOP/s", "of ceiling", "ER", "PD", "OER")]
    for name in SETTINGS:
        s, q = figures["speed"][name], figures["quality"]["rows"][name]
        rows.append((name, f"{s['ms']:.0f}", f"{s['speedup']:.2f}", f"{s['gflops_per_s']:.0f}",
                     f"{s['ceiling_fraction']:.2f}", f"{q['er_map']:.1f}", f"{q['pd_ap']:.1f}",
                     f"{q['oer_map']:.1f}"))
    return format_table(rows)


def photo_folder(folder: Path) -> Path:
    """The scikit-image photos (real scenes, shipped in its wheel) copied to ``folder``."""
    from skimage import data

    source = Path(data.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copyfile(source / name, folder / name)
        read_image(folder / name)  # check each is whole
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.benchmark_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--size", type=int, default=512, help="input size of the speed model")
    parser.add_argument("--preset", default="benet", help="backbone of the speed model")
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="training time of the quality model (default 8)")
    parser.add_argument("--calibration-images", type=int, default=16,
                        help="int8 calibration images (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--out", type=Path, default=common.REPO / "runs" / "bench_deploy",
                        help="folder for the data, the run and the exports (replaced)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the small model alone at 64x64, seconds of training "
                             "(figures meaningless)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.calibration_images = 2, 6
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    figures: dict[str, object] = {"machine": machine(), "command": " ".join(sys.argv),
                                  "quick": args.quick}
    figures["quality"], small_files = quality(args)
    image = photo(args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out / "speed"
        if args.quick:  # the small model stands in for benet
            pt_path, files = small_files["torch_eager"], small_files
            config = read_model_file(pt_path)[0].config
            image = photo(*config.input_size[::-1])
        else:
            say(f"[speed] {args.preset} at {args.size}x{args.size}: exporting the settings "
                f"(int8 calibrated on {len(PHOTOS)} photos)")
            folder.mkdir(parents=True, exist_ok=True)
            pt_path, _ = untrained_model_file(args.preset, args.size, folder)
            files = export_settings(pt_path, folder, photo_folder(Path(tmp) / "photos"),
                                    len(PHOTOS), verify=False)
        figures["speed_model"] = {"preset": args.preset if not args.quick else "quality model",
                                  "size": args.size}
        gflops = {"full": graph_gflops(pt_path, fast=False), "fast": graph_gflops(pt_path, True)}
        say("[ceiling] a lone 3x3 convolution, torch and ONNX Runtime")
        ceiling = conv_ceiling(args.runs)
        figures["ceiling"] = ceiling
        figures["ceiling_gflops"] = ceiling["best"]
        figures["speed"] = speed_rows(timed(files, image, args.runs), gflops, ceiling["best"])
        say("[profile] ONNX Runtime float32 and int8")
        figures["ort_profile"] = {name: ort_profile(files[name], image)
                                  for name in ("ort_fp32", "ort_int8")}
    figures.update(headline(figures["speed"], figures["quality"]["rows"]))
    figures["targets"] = TARGETS
    figures["targets_met"] = met(figures)
    return common.finish(args.json, figures, started, table)


if __name__ == "__main__":
    sys.exit(main())
