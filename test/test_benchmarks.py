"""Smoke runs of the benchmark scripts (``--quick``): they run to the end and write their
figures as JSON with every key and numeric values. Timings are not asserted here: they mean
nothing on a shared test machine; the targets are checked by reading a full run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def _run(script: str, json_path, timeout: float, env: dict[str, str], *args: str) -> dict:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick",
                             "--json", str(json_path), *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(json_path.read_text())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def test_bench_node_quick(ros_env, tmp_path):
    figures = _run("bench_node.py", tmp_path / "node.json", 240, ros_env,
                   "--domain-id", ros_env["ROS_DOMAIN_ID"])
    for key in ("e2e_ms", "model_ms", "node_overhead_ratio", "stale_frame_ratio",
                "frame_age_ms", "inference_period_ms", "mem_growth_mb", "rss_mb_start",
                "rss_mb_end"):
        assert _number(figures[key]), (key, figures[key])
    assert figures["e2e_answered"] >= 1 and figures["frames_answered"] >= 3
    assert figures["node_exit"] == 0  # the node stopped cleanly on SIGINT
    assert figures["node_diagnostics"]["frames_failed"] == "0"
    assert set(figures["targets"]) == {"node_overhead_ratio", "stale_frame_ratio",
                                       "mem_growth_mb"}


def test_bench_inference_quick(tmp_path):
    figures = _run("bench_inference.py", tmp_path / "inference.json", 240, dict(os.environ))
    for key in ("bu_ratio_16_1", "td_ratio_16_1", "ort_speedup", "decode_ms",
                "overhead_ratio"):
        assert _number(figures[key]), (key, figures[key])
    for name in ("bottom_up_ms", "top_down_ms"):
        assert set(figures[name]) == {"1", "16"} and all(map(_number, figures[name].values()))
    for backend in ("torch", "onnxruntime"):
        stages = figures["stages_ms"][backend]
        assert set(stages) == {"pre", "model", "decode"} and all(map(_number, stages.values()))
    (preset,) = figures["presets"].values()
    assert _number(preset["params_m"]) and _number(preset["gflops"])


def test_bench_learn_quick(tmp_path):
    """Three arms of a few seconds each: the figures exist and the full model file loads."""
    from caer_ros.inference.predictor import Predictor

    figures = _run("bench_learn.py", tmp_path / "learn.json", 300, dict(os.environ),
                   "--out", str(tmp_path / "learn"), "--no-progress")
    for key in ("er_map", "pd_ap", "oer_map", "er_map_context_only", "er_map_person_only",
                "context_only_ratio", "person_only_ratio"):
        assert _number(figures[key]), (key, figures[key])
    assert set(figures["arms"]) == {"full", "context_only", "person_only"}
    for arm in figures["arms"].values():
        assert arm["steps"] >= 1 and _number(arm["train_s"]) and _number(arm["s_per_step"])
        assert set(arm["oer_per_threshold"]) == {f"{0.5 + 0.05 * i:.2f}" for i in range(10)}
    assert set(figures["targets"]) == {"er_map", "pd_ap", "oer_map", "er_map_context_only",
                                       "er_map_person_only"}
    assert isinstance(figures["all_targets_met"], bool)
    assert figures["model_check"]["loads"] and figures["config"]["model"]["input_size"]
    predictor = Predictor.from_file(figures["model_file"])
    assert predictor.settings.extraction == figures["extraction"] == "center"
    assert predictor.meta["trained"] is True


def test_bench_amalgamation_quick(tmp_path):
    """Two teachers and four arms of a few seconds each: every figure exists and is a number,
    the fine-tuned arm started from the face teacher, the KA arms amalgamated 1 and 2."""
    figures = _run("bench_amalgamation.py", tmp_path / "amalgamation.json", 300,
                   dict(os.environ), "--out", str(tmp_path / "amalgamation"), "--no-progress")
    for key in ("er_map_baseline", "er_map_finetune", "er_map_ka_1", "er_map_ka_2", "ka_gain",
                "teacher_face_val_macro_f1", "teacher_face_val_accuracy",
                "teacher_context_val_macro_f1", "teacher_context_val_accuracy"):
        assert _number(figures[key]), (key, figures[key])
    assert figures["ka_gain"] == round(figures["er_map_ka_2"] - figures["er_map_baseline"], 2)
    assert set(figures["arms"]) == {"baseline", "finetune", "ka_1", "ka_2"}
    for arm in figures["arms"].values():
        for key in ("er_map", "pd_ap", "oer_map", "train_s", "s_per_step"):
            assert _number(arm[key]), (key, arm[key])
        assert arm["steps"] >= 1
    face, context = (figures["teachers"][name]["model"] for name in ("face", "context"))
    assert figures["arms"]["baseline"]["arm_overrides"] == []
    assert figures["arms"]["finetune"]["arm_overrides"] == [f'init_backbone="{face}"']
    assert json.dumps([face]) in figures["arms"]["ka_1"]["arm_overrides"][0]
    assert json.dumps([face, context]) in figures["arms"]["ka_2"]["arm_overrides"][0]
    for teacher in figures["teachers"].values():
        assert teacher["steps"] >= 1 and _number(teacher["s_per_step"])


def test_bench_multitask_quick(tmp_path):
    """Teacher, three arms and the fusion evaluation of a few seconds each: every figure exists
    and is a number; the distillation arm names the teacher's model file."""
    figures = _run("bench_multitask.py", tmp_path / "multitask.json", 300, dict(os.environ),
                   "--out", str(tmp_path / "multitask"))
    for key in ("ccc_mean", "er_map", "macro_f1_heco", "er_map_distill", "distill_gain",
                "er_map_discriminator", "discriminator_gain", "er_map_fusion", "fusion_gain"):
        assert _number(figures[key]), (key, figures[key])
    assert set(figures["arms"]) == {"teacher", "base", "distill", "discriminator", "fusion"}
    assert figures["distill_gain"] == round(figures["er_map_distill"] - figures["er_map"], 2)
    for name in ("base", "distill", "discriminator"):
        arm = figures["arms"][name]
        assert arm["steps"] >= 1 and _number(arm["abaw_score"]) and _number(arm["pd_ap"])
    assert figures["arms"]["fusion"]["model"] == figures["arms"]["base"]["model"]
    teacher = str(tmp_path / "multitask" / "runs" / "teacher" / "final.pt")
    assert teacher in figures["arms"]["distill"]["arm_overrides"][0]
    assert figures["arms"]["base"]["arm_overrides"] == []
    assert _number(figures["arms"]["teacher"]["macro_f1_heco"])


def _has_gpu() -> bool:
    import onnxruntime
    import torch

    gpu_providers = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    return torch.cuda.is_available() or bool(gpu_providers & set(
        onnxruntime.get_available_providers()))


def test_bench_gpu_quick(tmp_path):
    """Without a CUDA device (CI) it skips at once, exit 0, no model built; with one, every
    figure is there (a number, or None with its reason)."""
    figures = _run("bench_gpu.py", tmp_path / "gpu.json", 600, dict(os.environ))
    if not _has_gpu():
        assert set(figures) == {"machine", "skipped", "providers_available"}
        assert figures["skipped"].startswith("no CUDA device")
        return
    assert "skipped" not in figures
    assert set(figures["providers_loaded"]) == {"CUDAExecutionProvider",
                                                "TensorrtExecutionProvider"}
    assert set(figures["fps"]) == {"torch_fp32", "torch_fp16", "ort_cuda", "ort_tensorrt_fp16"}
    for name, value in figures["fps"].items():
        assert _number(value) or f"fps.{name}" in figures["not_run"], (name, value)
    for name in ("cuda_fp32", "tensorrt_fp16"):
        assert _number(figures[f"{name}_max_diff"]) or f"parity.{name}" in figures["not_run"]
        assert isinstance(figures[f"{name}_same_people"], (bool, type(None)))
    cache = figures["tensorrt_cache"]
    if cache is None:
        assert "tensorrt_cache" in figures["not_run"]
    else:
        assert set(cache) >= {"files", "cold_start_s", "warm_start_s", "works"}
    assert set(figures["targets"]) == {"cuda_fp32_max_diff", "tensorrt_fp16_max_diff",
                                       "tensorrt_fp16_same_people", "tensorrt_cache.works"}
