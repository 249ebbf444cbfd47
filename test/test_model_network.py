"""BENet assembly: output shapes per preset, head switches, priors, determinism, tracing."""

from __future__ import annotations

import warnings

import pytest
import torch

from caer_ros.labels import EMOTIC, HECO
from caer_ros.model import BENetOutput, ModelConfig, build_model, parameter_counts
from caer_ros.model.config import BACKBONE_PRESETS, backbone_preset
from caer_ros.model.heads import HEATMAP_PRIOR_BIAS

SIZE = (64, 96)


def small(**changes) -> ModelConfig:
    values = {"backbone": "hrnet_w18_small", "input_size": SIZE, "head_blocks": 1}
    values.update(changes)
    return ModelConfig(**values)


@pytest.mark.parametrize("preset", sorted(BACKBONE_PRESETS))
def test_output_shapes_for_every_preset(preset):
    config = ModelConfig(backbone=preset, categories={"emotic": EMOTIC, "heco": HECO},
                         continuous=True, input_size=SIZE)
    model = build_model(config, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *SIZE))
    assert isinstance(out, BENetOutput)
    for scale, stride in ((out.quarter, 4), (out.half, 2)):
        h, w = SIZE[0] // stride, SIZE[1] // stride
        assert scale.stride == stride
        assert scale.heatmap.shape == (2, 1, h, w)
        assert scale.size.shape == (2, 2, h, w)
        assert list(scale.emotions) == ["emotic", "heco"]
        assert scale.emotions["emotic"].shape == (2, 26, h, w)
        assert scale.emotions["heco"].shape == (2, 8, h, w)
        assert scale.continuous.shape == (2, 3, h, w)
    for heads in (out.person_centric, out.background):
        assert {k: tuple(v.shape) for k, v in heads.items()} == {"emotic": (2, 26),
                                                                 "heco": (2, 8)}
    widths = list(backbone_preset(preset).stage4.num_channels)
    assert [f.shape[1] for f in out.features] == widths
    assert [f.shape[2] for f in out.features] == [16, 8, 4, 2]
    assert all(torch.isfinite(t).all() for t in out.flat().values())
    with torch.no_grad():
        maps_only = model(torch.randn(2, 3, *SIZE), classifiers=False)
    assert maps_only.person_centric is None and maps_only.background is None
    assert maps_only.quarter.heatmap.shape == out.quarter.heatmap.shape


def test_switches_remove_outputs_and_parameters():
    full = build_model(small(), seed=0)
    lean = build_model(small(half_resolution=False, person_centric=False, background=False),
                       seed=0).eval()
    with torch.no_grad():
        out = lean(torch.randn(1, 3, *SIZE))
    assert out.half is None and out.person_centric is None and out.background is None
    assert out.quarter.continuous is None
    assert set(out.flat()) == {"q.heatmap", "q.size", "q.emotions.emotic"}
    assert lean.person_centric is None
    assert all(stack.deconv is None for stack in lean.detection.stacks.values())
    counts, lean_counts = parameter_counts(full), parameter_counts(lean)
    assert lean_counts.person_centric == 0 and lean_counts.background == 0
    assert counts.person_centric == counts.background > 0
    assert lean_counts.detection < counts.detection
    assert counts.total == sum(p.numel() for p in full.parameters())
    assert counts.total == (counts.backbone + counts.detection + counts.emotion
                            + counts.person_centric + counts.background)


def test_every_parameter_is_trained_and_features_are_left_intact():
    model = build_model(small(continuous=True, attention=True), seed=0).train()
    images = torch.randn(2, 3, *SIZE)
    out = model(images)
    with torch.no_grad():
        backbone_only = model.backbone.eval()(images)
        model.backbone.train()
    loss = sum(t.float().square().mean() for t in out.flat().values())
    loss = loss + sum(f.mean() for f in out.features)
    loss.backward()
    unused = [k for k, p in model.named_parameters() if p.grad is None]
    assert unused == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    for a, b in zip(out.features, backbone_only, strict=True):
        assert torch.equal(a, b)


def test_heads_without_residual_blocks_adapt_the_width():
    model = build_model(small(head_blocks=0, head_channels=24), seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *SIZE))
    assert out.quarter.heatmap.shape == (1, 1, 16, 24)
    assert out.half.emotions["emotic"].shape == (1, 26, 32, 48)


def test_flat_view_round_trips():
    model = build_model(small(continuous=True), seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *SIZE))
    flat = out.flat()
    assert list(flat)[:5] == ["q.heatmap", "q.size", "q.emotions.emotic", "q.continuous",
                              "h.heatmap"]
    again = BENetOutput.from_flat(flat)
    assert again.flat().keys() == flat.keys()
    assert all(torch.equal(again.flat()[k], v) for k, v in flat.items())


def test_untrained_heatmap_starts_at_centernet_prior():
    model = build_model(small(), seed=0)
    for layers in model.detection.output_layers():
        assert torch.all(layers["heatmap"][-1].bias == HEATMAP_PRIOR_BIAS)
        assert torch.all(layers["size"][-1].bias == 0)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *SIZE))
    for scale in out.scales():
        scores = torch.sigmoid(scale.heatmap)
        assert scores.mean().item() == pytest.approx(0.1, abs=0.02)
        assert scores.max().item() < 0.3  # below the default detection threshold


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(small(), seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(small(), seed=7).state_dict()
    c = build_model(small(), seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_heads_follow_attention_switch():
    with_attention = parameter_counts(build_model(small(attention=True), seed=0))
    without = parameter_counts(build_model(small(), seed=0))
    assert without.attention == 0
    assert with_attention.attention > with_attention.backbone_attention > 0
    # benet's own attention can be switched off: then its keys are the official ones
    off = build_model(ModelConfig(backbone="benet", attention=False, input_size=SIZE), seed=0)
    assert not [k for k in off.backbone.state_dict() if "attention" in k]


def test_exports_to_onnx_with_flat_outputs_and_dynamic_batch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = build_model(small(continuous=True), seed=0).eval()

    class Flat(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return tuple(self.net(images).flat().values())

    wrapper = Flat(model).eval()
    images = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        names = list(model(images).flat())
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(wrapper, (images,), str(path), input_names=["images"],
                          output_names=names, dynamic_axes={"images": {0: "batch"}},
                          dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.randn(2, 3, *SIZE)  # another batch size through the exported graph
    got = session.run(None, {"images": other.numpy()})
    with torch.no_grad():
        expected = model(other).flat()
    assert [o.name for o in session.get_outputs()] == list(expected)
    for array, tensor in zip(got, expected.values(), strict=True):
        assert array.shape == tuple(tensor.shape)
        assert torch.allclose(torch.from_numpy(array), tensor, atol=1e-4)
