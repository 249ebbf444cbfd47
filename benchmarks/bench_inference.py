"""Inference benchmark: model size and cost per preset, bottom-up vs top-down, ORT vs torch,
and the share of pre- and post-processing (issue 3).

Everything is measured side by side in one run on this machine, medians of ``--runs`` runs:

- ``presets.<name>.params_m`` / ``gflops``: parameters (millions) and forward FLOPs (GFLOP,
  2 per multiply-add, ``torch.utils.flop_counter``) per preset at the input size, per part.
- Bottom-up vs top-down (BENet section 1-2: one pass for everyone vs one pass per person):
  our Predictor returning 1 and 16 people (``bu_ratio_16_1`` = latency(16) / latency(1),
  target <= 1.10) against a top-down baseline that crops each person and runs one
  person-centric pass per person with the same backbone (``td_ratio_16_1``). The models are
  untrained, so the number of people is set by the decoder (threshold 0, at most N people):
  the cost of everything after the forward pass grows with N exactly as with real people.
- ``ort_speedup`` = torch eager forward / ONNX Runtime CPU forward, same model (target >= 1.5).
- ``decode_ms`` for 16 people (target <= 2) and ``overhead_ratio`` = (pre + model + decode) /
  model for the default backend (target <= 1.10).
- ``flip_test_ms``: the forward pass of the latency preset in torch eager and ONNX Runtime,
  without and with flip test (the image and its mirror as one batch of 2, BENet's test
  option), and ``flip_cost`` = with / without per backend.
- ``public_path``: the latency preset with a converted model's default settings (BENet's test
  path: short side 512, flip test, logit fusion, input-resolution peaks, scores at the peak;
  ``caer_ros.convert``) on a 4:3 photo (640x480, so the network input is 512x704): per
  backend the stages with flip test off and on, ``decode_ms`` for 16 people (target <= 3),
  ``overhead_ratio`` (pre + model + decode) / model with flip test off (target <= 1.10) and
  ``flip_cost`` = model time with / without flip test.
- ``reference``: BENet's public model as measured on its own code (19.50 M parameters,
  86.7 GFLOP at 512x512) next to our exact ``benet`` (``benet_params_m``, ``benet_gflops``;
  ours leaves out the 4,121-parameter fusion MLP that no released config runs).

Usage: python benchmarks/bench_inference.py [--json PATH] [--runs 5] [--size 512] [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from common import benchmark_parser, machine, median_ms, photo, write_json
from torch.utils.flop_counter import FlopCounterMode

from caer_ros.convert import PUBLIC_TEST_SETTINGS
from caer_ros.inference.export import export_onnx, export_with_summary
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import preprocess
from caer_ros.model import (
    InferenceSettings,
    ModelConfig,
    build_model,
    parameter_counts,
    save_model_file,
)
from caer_ros.model.heads import ClassificationHead
from caer_ros.model.hrnet import HRNet
from training.experiments import person_sized_boxes, untrained_model_file

PRESETS = ("hrnet_w18_small", "benet", "hrnet_w32")
# BENet's public model (BU+Det+PC+BG config) measured on its own code at 512x512.
REFERENCE = {"params_m": 19.50, "gflops": 86.7, "unused_fusion_params": 4121}
PARTS = ("backbone", "detection", "emotion", "person_centric", "background")


def preset_costs(preset: str, size: int) -> dict[str, object]:
    """Parameters and forward GFLOP of a full BENet (all heads) built on ``preset``."""
    model = build_model(ModelConfig(backbone=preset, input_size=(size, size)), seed=0).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, size, size))
    flops = {name.split(".")[-1]: sum(ops.values()) / 1e9
             for name, ops in counter.get_flop_counts().items()
             if name.count(".") == 1 and name.split(".")[-1] in PARTS}
    params = parameter_counts(model).millions()
    return {
        "params_m": params["total"],
        "params_m_parts": {k: params[k] for k in (*PARTS, "backbone_attention")},
        "gflops": round(counter.get_total_flops() / 1e9, 2),
        "gflops_parts": {k: round(v, 2) for k, v in flops.items()},
    }


class TopDown(torch.nn.Module):
    """The multi-stream methods' way: one person-centric pass (backbone + classification head)
    per person crop."""

    def __init__(self, model) -> None:
        super().__init__()
        self.backbone: HRNet = model.backbone
        self.head: ClassificationHead = model.person_centric

    def forward(self, crop: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(crop))


def public_path_figures(preset: str, frame: np.ndarray, runs: int, folder: Path,
                        short_side: int = 512) -> dict[str, object]:
    """The ``public_path`` figures (module docstring): an untrained ``preset`` saved with the
    converter's settings (flip test off and on), run by torch and by its ONNX export."""
    config = ModelConfig(backbone=preset, input_size=(short_side, short_side))
    model = build_model(config, seed=0).eval()
    person_sized_boxes(model)
    figures: dict[str, object] = {}
    stages: dict[str, dict[str, dict[str, float]]] = {"torch": {}, "onnxruntime": {}}
    for flip in (False, True):
        settings = InferenceSettings.for_model(config, **{
            **PUBLIC_TEST_SETTINGS, "short_side": short_side, "flip_test": flip,
            "top_k": 16})
        name = "on" if flip else "off"
        pt_path = save_model_file(folder / f"public_{name}.pt", model, settings)
        onnx_path = export_with_summary(pt_path, folder / f"public_{name}.onnx",
                                        verify=False).path
        for backend, path in (("torch", pt_path), ("onnxruntime", onnx_path)):
            print(f"[public path] {backend}, flip test {name}", flush=True)
            predictor = Predictor.from_file(path)
            stages[backend][name] = predictor.stage_times(frame, runs=runs, people=16)
            figures["input_size"] = list(predictor.input_size)
    figures["frame_size"] = [frame.shape[1], frame.shape[0]]
    figures["stages_ms"] = {backend: {flip: {k: round(v, 2) for k, v in times.items()}
                                      for flip, times in by_flip.items()}
                            for backend, by_flip in stages.items()}
    off = stages["onnxruntime"]["off"]
    figures["decode_ms"] = round(off["decode"], 3)
    figures["overhead_ratio"] = round((off["pre"] + off["model"] + off["decode"]) / off["model"],
                                      3)
    figures["flip_cost"] = {backend: round(by_flip["on"]["model"] / by_flip["off"]["model"], 3)
                            for backend, by_flip in stages.items()}
    return figures


def person_boxes(n: int, width: int, height: int) -> np.ndarray:
    """``n`` person-shaped boxes spread over the image (x1, y1, x2, y2)."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    w, h = width / cols, height / rows
    boxes = [(c * w, r * h, (c + 0.8) * w, (r + 0.95) * h)
             for r in range(rows) for c in range(cols)][:n]
    return np.asarray(boxes, dtype=np.float32)


def top_down_ms(td: TopDown, image: np.ndarray, n: int, crop: int, runs: int) -> float:
    boxes = person_boxes(n, image.shape[1], image.shape[0])

    def run() -> None:
        with torch.inference_mode():
            for x1, y1, x2, y2 in boxes.astype(int):
                tensor, _ = preprocess(image[y1:y2, x1:x2], (crop, crop))
                td(torch.from_numpy(tensor))

    return median_ms(run, runs)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--size", type=int, default=512, help="network input size")
    parser.add_argument("--preset", default="benet", help="preset of the latency figures")
    parser.add_argument("--td-crop", type=int, default=256, help="top-down crop size")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: hrnet_w18_small at 192, 2 runs (figures meaningless)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.size, args.preset, args.td_crop = 2, 192, "hrnet_w18_small", 64
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as the Predictor does, so the top-down baseline is fair
    figures: dict[str, object] = {"machine": machine(), "size": args.size, "runs": args.runs,
                                  "preset": args.preset}

    presets = (args.preset,) if args.quick else PRESETS
    figures["presets"] = {}
    for preset in presets:
        print(f"[costs] {preset}", flush=True)
        figures["presets"][preset] = preset_costs(preset, args.size)

    # A photo of the input's aspect: no letterbox border, where peaks would not count as people.
    image = photo(args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        pt_path, model = untrained_model_file(args.preset, args.size, Path(tmp))
        onnx_path = export_onnx(pt_path, Path(tmp) / "bench.onnx")
        predictors = {"torch": Predictor.from_file(pt_path, backend="torch"),
                      "onnxruntime": Predictor.from_file(onnx_path, backend="onnxruntime")}
        flip_path = export_with_summary(pt_path, Path(tmp) / "bench_flip.onnx", flip_test=True,
                                        verify=False).path
        flipped = {"torch": Predictor.from_file(pt_path, backend="torch",
                                                changes={"flip_test": True}),
                   "onnxruntime": Predictor.from_file(flip_path, backend="onnxruntime")}

        print("[latency] bottom-up vs top-down", flush=True)
        bu = {}
        for n in (1, 16):
            bu[n] = median_ms(lambda n=n: predictors["torch"].predict(
                image, detection_threshold=0.0, max_people=n), args.runs)
            got = len(predictors["torch"].predict(image, detection_threshold=0.0, max_people=n))
            if got != n:
                raise SystemExit(f"the decoder gave {got} people, not {n}: figures invalid")
        td_model = TopDown(model).eval()
        td = {n: top_down_ms(td_model, image, n, args.td_crop, args.runs) for n in (1, 16)}
        figures["bottom_up_ms"] = {str(n): round(v, 1) for n, v in bu.items()}
        figures["top_down_ms"] = {str(n): round(v, 1) for n, v in td.items()}
        figures["bu_ratio_16_1"] = round(bu[16] / bu[1], 3)
        figures["td_ratio_16_1"] = round(td[16] / td[1], 3)

        print("[latency] torch vs ONNX Runtime, pre / model / decode", flush=True)
        stages = {name: p.stage_times(image, runs=args.runs, people=16)
                  for name, p in predictors.items()}
        figures["stages_ms"] = {name: {k: round(v, 2) for k, v in s.items()}
                                for name, s in stages.items()}
        figures["ort_speedup"] = round(stages["torch"]["model"] / stages["onnxruntime"]["model"],
                                       3)
        default = stages["onnxruntime"]
        figures["decode_ms"] = round(default["decode"], 3)
        figures["overhead_ratio"] = round(
            (default["pre"] + default["model"] + default["decode"]) / default["model"], 3)
        figures["backends"] = {name: p.backend for name, p in predictors.items()}

        print("[latency] flip test off / on", flush=True)
        flip = {name: p.stage_times(image, runs=args.runs, people=1)["model"]
                for name, p in flipped.items()}
        figures["flip_test_ms"] = {name: {"off": round(stages[name]["model"], 1),
                                          "on": round(flip[name], 1)} for name in flip}
        figures["flip_cost"] = {name: round(flip[name] / stages[name]["model"], 3)
                                for name in flip}

        frame = photo(160, 120) if args.quick else photo(640, 480)  # 4:3
        figures["public_path"] = public_path_figures(args.preset, frame, args.runs, Path(tmp),
                                                     128 if args.quick else 512)

    if "benet" in figures["presets"]:
        ours = figures["presets"]["benet"]
        figures["reference"] = {**REFERENCE, "size": 512, "benet_size": args.size,
                                "benet_params_m": ours["params_m"],
                                "benet_gflops": ours["gflops"]}

    figures["targets"] = {"bu_ratio_16_1": "<= 1.10", "ort_speedup": ">= 1.5",
                          "decode_ms": "<= 2", "overhead_ratio": "<= 1.10",
                          "public_path.decode_ms": "<= 3",
                          "public_path.overhead_ratio": "<= 1.10"}
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
