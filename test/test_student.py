"""The students' compact backbones (caer_ros/model/student.py), their presets, and the
label-free distillation terms (training/objectives/label_free.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from helpers.small_model import small_config, small_model

from caer_ros.inference.graph import InferenceGraph
from caer_ros.inference.graph_outputs import CONTINUOUS_SUMS, EMOTION_SUMS, HEATMAP, SIZE
from caer_ros.model import (
    STUDENT_PRESETS,
    InferenceSettings,
    ModelConfig,
    build_model,
    load_backbone_weights,
    save_model_file,
)
from caer_ros.model.student import StudentBackbone
from training.objectives.label_free import (
    TeacherMaps,
    label_free_terms,
    people_mask,
    teacher_maps,
)

# the small test model's config (EMOTIC + HECO scored by a softmax, continuous, 96x128), whose
# seeded final layers give peaks and spread scores as a trained model's would
TEACHER_CHANGES = {"scores": {"heco": "softmax"}, "attention": False}
TEACHER = small_config(**TEACHER_CHANGES)


@pytest.mark.parametrize("preset", sorted(STUDENT_PRESETS))
def test_student_preset_keeps_the_output_contract(preset):
    """A student has the teacher's sets, scores, continuous head and input size, and gives
    BENet's outputs: a 1/4 heatmap, sizes and emotion maps per set, four feature levels."""
    config = ModelConfig.student(preset, TEACHER)
    assert config.categories == TEACHER.categories and config.scores == TEACHER.scores
    assert config.continuous and config.input_size == (96, 128) and config.is_student
    model = build_model(config, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 128), classifiers=False)
    q = out.quarter
    assert out.half is None and q.stride == 4
    assert q.heatmap.shape == (2, 1, 24, 32) and q.size.shape == (2, 2, 24, 32)
    assert q.emotions["emotic"].shape == (2, 26, 24, 32)
    assert q.emotions["heco"].shape == (2, 8, 24, 32)
    assert q.continuous.shape == (2, 3, 24, 32)
    assert [f.shape[-2:] for f in out.features] == [(24, 32), (12, 16), (6, 8), (3, 4)]


def test_student_is_much_smaller_than_benet():
    student = build_model(ModelConfig.student("student_large", ModelConfig()))
    benet = build_model(ModelConfig())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(student) * 3 < count(benet)


def test_unknown_preset_and_hrnet_layout_of_a_student():
    with pytest.raises(ValueError, match="unknown student preset 'tiny'"):
        ModelConfig.student("tiny", TEACHER)
    with pytest.raises(ValueError, match="not an HRNet layout"):
        ModelConfig.student("student_small", TEACHER).backbone_config()
    with pytest.raises(ValueError, match="mobilenet_v3_large"):  # listed among the known
        ModelConfig(backbone="mobilenet_v9")


def test_trunk_keeps_torchvision_names_so_imagenet_weights_load():
    """The trunk's parameters are torchvision's (``features.*``): a torchvision MobileNetV3
    state dict, as its ImageNet file holds it, loads every trunk tensor; the neck is new."""
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    with torch.no_grad():
        for p in reference.parameters():
            p.uniform_(-1, 1)
    model = build_model(ModelConfig.student("student_small", TEACHER), seed=0)
    report = load_backbone_weights(model, reference.state_dict())
    trunk = {k for k in model.backbone.state_dict() if k.startswith("features.")}
    assert report.loaded == len(trunk) > 100
    assert all(k.startswith(("lateral.", "smooth.")) for k in report.missing)
    assert set(report.unexpected) == {k for k in reference.state_dict()
                                      if k.startswith("classifier.")}
    weight = "features.1.block.0.0.weight"
    assert torch.equal(model.backbone.state_dict()[weight], reference.state_dict()[weight])


def test_student_taps_follow_the_trunk():
    backbone = StudentBackbone("mobilenet_v3_large", 40)
    assert backbone.out_channels == [40] * 4
    assert backbone.taps == sorted(backbone.taps) and backbone.taps[-1] == \
        len(backbone.features) - 1


def test_student_exports_and_runs_in_onnx_runtime(tmp_path):
    """A student is a normal model file: exported, it runs in ONNX Runtime with the torch
    graph's numbers, through the node's predictor."""
    from caer_ros.inference.export import export_onnx
    from caer_ros.inference.predictor import Predictor

    config = ModelConfig.student("student_small", TEACHER)
    model = build_model(config, seed=1).eval()
    pt = save_model_file(tmp_path / "s.pt", model,
                         InferenceSettings.for_model(config, detection_threshold=0.0))
    onnx = export_onnx(pt, tmp_path / "s.onnx")
    batch = np.random.default_rng(0).standard_normal((1, 3, 96, 128)).astype(np.float32)
    a = Predictor.from_file(pt).runner.run(batch)
    b = Predictor.from_file(onnx).runner.run(batch)
    assert set(a) == set(b) == {"heatmap", "size", "emotion_sums.emotic", "emotion_sums.heco",
                                "continuous_sums"}
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4, rtol=1e-4, err_msg=name)
    image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    assert len(Predictor.from_file(onnx).predict(image, max_people=5)) > 0


# --------------------------------------------------------------------------- label-free terms


def _graph_outputs(config: ModelConfig, seed: int, settings: InferenceSettings | None = None
                   ) -> dict[str, np.ndarray]:
    model = small_model(seed, **TEACHER_CHANGES).eval()
    settings = settings or InferenceSettings.for_model(config)
    graph = InferenceGraph(model, settings).eval()
    with torch.no_grad():
        out = graph.outputs(torch.randn(2, 3, *config.input_size,
                                        generator=torch.Generator().manual_seed(seed)))
    return {k: v.numpy() for k, v in out.items()}


def test_teacher_maps_from_a_stride_2_graph_keep_peaks_and_sizes():
    """A teacher whose graph fuses 1/4 and 1/2 maps (stride 2) gives targets on the student's
    1/4 grid: heatmap max-pooled (a peak keeps its height), sizes taken at the strongest
    pixel and put in 1/4-map pixels, emotion maps averaged."""
    heat = np.zeros((1, 1, 8, 8), np.float32)
    heat[0, 0, 3, 5] = 0.9  # at stride 2: input pixel (10..12, 6..8)
    size = np.zeros((1, 2, 8, 8), np.float32)
    size[0, :, 3, 5] = (16.0, 8.0)  # input pixels
    emotions = np.zeros((1, 2, 8, 8), np.float32)
    emotions[0, 0, :4] = 1.0  # top half 1
    sums = np.concatenate([np.zeros((1, 2, 1, 8), np.float32), np.cumsum(emotions, 2)], 2)
    config = ModelConfig(backbone="hrnet_cpu", categories={"s": ("a", "b")}, input_size=(32, 32))
    maps = teacher_maps({HEATMAP: heat, SIZE: size, EMOTION_SUMS + "s": sums}, config,
                        (16, 16), (4, 4), threshold=0.5)
    assert maps.heatmap.shape == (1, 1, 4, 4) and float(maps.heatmap[0, 0, 1, 2]) == \
        pytest.approx(0.9)
    assert maps.size[0, :, 1, 2].tolist() == [4.0, 2.0]  # 16 and 8 input px at stride 4
    assert maps.emotions["s"][0, 0, :2].eq(1).all() and maps.emotions["s"][0, 0, 2:].eq(0).all()
    assert maps.count == 1
    # a 4 x 2 box centred on cell (1, 2)'s centre (2.5, 1.5): x in [0.5, 4.5), y in [0.5, 2.5)
    assert maps.people[0, 0].nonzero().tolist() == [[r, c] for r in (0, 1) for c in range(4)]


def test_people_mask_counts_peaks_over_the_threshold():
    heat = torch.zeros(2, 1, 10, 10)
    heat[0, 0, 2, 2], heat[0, 0, 7, 7], heat[1, 0, 5, 5] = 0.8, 0.2, 0.6
    size = torch.full((2, 2, 10, 10), 2.0)
    mask, count = people_mask(heat, size, threshold=0.5)
    assert count == 2
    assert mask[0, 0].sum() == 4 and mask[0, 0, 7, 7] == 0 and mask[1, 0, 5, 5] == 1


def test_terms_vanish_when_the_student_equals_the_teacher_and_grow_otherwise():
    """Every label-free term is 0 for a student whose logits give the teacher's maps (so a
    falling loss reads as agreement), and positive for another student."""
    config = ModelConfig.student("student_small", TEACHER)
    outputs = _graph_outputs(TEACHER, seed=0,
                             settings=InferenceSettings.for_model(TEACHER, fuse_scales=False))
    maps = teacher_maps(outputs, TEACHER, (96, 128), (24, 32), threshold=0.05)
    assert maps.count > 0

    def logit(p):
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))

    from caer_ros.model.output import ScaleOutput

    exact = ScaleOutput(4, logit(maps.heatmap), maps.size,
                        {"emotic": logit(maps.emotions["emotic"]),
                         "heco": torch.log(maps.emotions["heco"].clamp_min(1e-12))},
                        logit(maps.continuous))
    other = ScaleOutput(4, torch.zeros_like(maps.heatmap), maps.size + 1,
                        {k: torch.zeros_like(v) for k, v in exact.emotions.items()},
                        torch.zeros_like(exact.continuous))
    for temperature in (1.0, 3.0):  # at a temperature too
        for name, value in label_free_terms(exact, maps, config,
                                            temperature=temperature).items():
            assert float(value) == pytest.approx(0.0, abs=2e-4), (name, temperature)
        for name, value in label_free_terms(other, maps, config,
                                            temperature=temperature).items():
            assert float(value) > 1e-3, (name, temperature)


def test_terms_without_people_are_zero_and_differentiable():
    config = ModelConfig.student("student_small", TEACHER)
    maps = TeacherMaps(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4),
                       {"emotic": torch.full((1, 26, 4, 4), 0.5),
                        "heco": torch.full((1, 8, 4, 4), 1 / 8)},
                       None, torch.zeros(1, 1, 4, 4), 0)
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    from caer_ros.model.output import ScaleOutput

    scale = ScaleOutput(4, logits, torch.zeros(1, 2, 4, 4, requires_grad=True),
                        {"emotic": torch.zeros(1, 26, 4, 4), "heco": torch.zeros(1, 8, 4, 4)})
    terms = label_free_terms(scale, maps, config, background=0.0)
    assert float(terms["size"]) == 0.0 and float(terms["emotions.emotic"]) == 0.0
    sum(terms.values()).backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0  # heat -> 0


def test_softmax_set_uses_a_distribution_kl():
    """A softmax-scored set (HECO) is matched as a distribution over its categories: adding a
    constant to every logit changes nothing; a sigmoid set's term does change."""
    config = ModelConfig.student("student_small", TEACHER)
    outputs = _graph_outputs(TEACHER, seed=2,
                             settings=InferenceSettings.for_model(TEACHER, fuse_scales=False))
    maps = teacher_maps(outputs, TEACHER, (96, 128), (24, 32), threshold=0.05)
    from caer_ros.model.output import ScaleOutput

    logits = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3))
              for k, v in maps.emotions.items()}
    base = ScaleOutput(4, torch.zeros_like(maps.heatmap), maps.size, logits)
    shifted = ScaleOutput(4, torch.zeros_like(maps.heatmap), maps.size,
                          {k: v + 2.0 for k, v in logits.items()})
    a, b = label_free_terms(base, maps, config), label_free_terms(shifted, maps, config)
    assert float(a["emotions.heco"]) == pytest.approx(float(b["emotions.heco"]), rel=1e-5)
    assert float(a["emotions.emotic"]) != pytest.approx(float(b["emotions.emotic"]), rel=1e-3)
    assert CONTINUOUS_SUMS in outputs


def test_teacher_maps_on_a_wide_image_and_rounding_clamped():
    """A 16x32 canvas: a stride-2 teacher map (8x16) onto the student's 4x8 grid, sizes from
    input pixels to grid pixels per axis; emotion probabilities a rounding outside [0, 1] (from
    the row prefix sums) are clamped, so the KL terms stay finite."""
    heat = np.zeros((1, 1, 8, 16), np.float32)
    heat[0, 0, 3, 9] = 0.9
    size = np.zeros((1, 2, 8, 16), np.float32)
    size[0, :, 3, 9] = (32.0, 12.0)  # input pixels
    rows = np.array([0.0, 1.000001] + [1.9999998, 2.0] * 4)[:9].astype(np.float32)
    sums = np.broadcast_to(rows[None, None, :, None], (1, 1, 9, 16)).copy()
    config = ModelConfig(backbone="hrnet_cpu", categories={"s": ("a",)}, input_size=(32, 32))
    maps = teacher_maps({HEATMAP: heat, SIZE: size, EMOTION_SUMS + "s": sums}, config,
                        (16, 32), (4, 8), threshold=0.5)
    assert maps.heatmap.shape == (1, 1, 4, 8) and float(maps.heatmap[0, 0, 1, 4]) == \
        pytest.approx(0.9)
    assert maps.size[0, :, 1, 4].tolist() == [8.0, 3.0]  # 32 and 12 input px at stride 4
    emotions = maps.emotions["s"]
    assert float(emotions.min()) >= 0.0 and float(emotions.max()) <= 1.0
    from caer_ros.model.output import ScaleOutput

    student = ModelConfig.student("student_small", config)
    scale = ScaleOutput(4, torch.zeros(1, 1, 4, 8), torch.zeros(1, 2, 4, 8),
                        {"s": torch.zeros(1, 1, 4, 8)})
    assert all(torch.isfinite(v) for v in label_free_terms(scale, maps, student).values())


def test_centre_region_weights_emotions_by_the_teacher_heat():
    """``region=centre``: an emotion error at a teacher centre costs more than the same error
    elsewhere in the person's box (``box`` counts both alike); unknown regions are refused."""
    from caer_ros.model.output import ScaleOutput
    from training.objectives.label_free import emotion_weight

    config = ModelConfig(backbone="hrnet_cpu", categories={"s": ("a",)}, input_size=(32, 32))
    heat = torch.zeros(1, 1, 8, 8)
    heat[0, 0, 4, 4], heat[0, 0, 4, 5] = 0.9, 0.3
    people = torch.zeros(1, 1, 8, 8)
    people[0, 0, 2:7, 2:7] = 1.0
    maps = TeacherMaps(heat, torch.zeros(1, 2, 8, 8), {"s": torch.full((1, 1, 8, 8), 0.2)},
                       None, people, 1)
    assert emotion_weight(maps, "centre", 0.1)[0, 0, 4, 4] == pytest.approx(0.9)
    assert emotion_weight(maps, "centre", 0.1)[0, 0, 0, 0] == pytest.approx(0.1)

    def term(y: int, x: int, region: str) -> float:
        logits = torch.logit(torch.full((1, 1, 8, 8), 0.2))
        logits[0, 0, y, x] = 3.0  # one wrong cell
        scale = ScaleOutput(4, torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), {"s": logits})
        return float(label_free_terms(scale, maps, config, 0.1, region)["emotions.s"])

    assert term(4, 4, "centre") > 2 * term(2, 2, "centre")
    # at a temperature, an error among low probabilities (0.06 for the teacher's 0.02) weighs
    # more against one among high ones (0.6 for 0.5) than at 1, where both cost about the same
    from training.objectives.label_free import binary_kl, soften

    def cost(teacher: float, student: float, t: float) -> float:
        target = soften(torch.tensor([teacher]), t, False)
        return float(binary_kl(torch.logit(torch.tensor([student])) / t, target)) * t * t

    assert torch.equal(soften(torch.tensor([0.02]), 1.0, False), torch.tensor([0.02]))
    at_1 = cost(0.02, 0.06, 1.0) / cost(0.5, 0.6, 1.0)
    assert 0.5 < at_1 < 2 and cost(0.02, 0.06, 4.0) / cost(0.5, 0.6, 4.0) > 3 * at_1
    assert term(4, 4, "box") == pytest.approx(term(2, 2, "box"))
    with pytest.raises(ValueError, match="region"):
        emotion_weight(maps, "everywhere")
