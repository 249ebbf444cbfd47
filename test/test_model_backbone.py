"""HRNet backbone: presets, official parameter names, parameter counts, attention."""

from __future__ import annotations

import pytest
import torch

from caer_ros.model.attention import Attention
from caer_ros.model.config import BACKBONE_PRESETS, backbone_preset
from caer_ros.model.hrnet import HRNet
from caer_ros.model.params import count, count_attention

OFFICIAL_TOP_LEVEL = {"conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2",
                      "transition2", "stage3", "transition3", "stage4"}


@pytest.fixture(scope="module")
def w32() -> HRNet:
    return HRNet(backbone_preset("hrnet_w32"))


@pytest.fixture(scope="module")
def benet_backbone() -> HRNet:
    return HRNet(backbone_preset("benet"))


def test_hrnet_w32_parameter_count_matches_reference(w32):
    # DESIGN.md: standard HRNet-W32, branch outputs only: 29.3 M parameters.
    assert count(w32) == pytest.approx(29.3e6, rel=0.01)
    assert count_attention(w32) == 0


def test_benet_backbone_parameter_count_matches_reference(benet_backbone):
    # DESIGN.md: the public BENet backbone has 16.1 M parameters, 0.95 M of them attention.
    # Our spatial attention uses CBAM's 7x7 kernel (98 weights per block) where BENet's code
    # uses 1x1 (2 weights): 58 blocks x 96 = 5.6 k more, +0.6 %.
    assert count(benet_backbone) == pytest.approx(16.1e6, rel=0.01)
    assert count_attention(benet_backbone) == pytest.approx(0.95e6, rel=0.01)


def test_hrnet_w32_has_official_key_names(w32):
    shapes = {k: tuple(v.shape) for k, v in w32.state_dict().items()}
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn2.running_var": (64,),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.bias": (256,),
        "layer1.3.bn3.weight": (256,),
        "transition1.0.0.weight": (32, 256, 3, 3),
        "transition1.1.0.0.weight": (64, 256, 3, 3),
        "transition2.2.0.0.weight": (128, 64, 3, 3),
        "transition3.3.0.0.weight": (256, 128, 3, 3),
        "stage2.0.branches.0.0.conv1.weight": (32, 32, 3, 3),
        "stage2.0.fuse_layers.0.1.0.weight": (32, 64, 1, 1),
        "stage2.0.fuse_layers.1.0.0.0.weight": (64, 32, 3, 3),
        "stage3.3.fuse_layers.2.0.1.0.weight": (128, 32, 3, 3),
        "stage4.2.branches.3.3.conv2.weight": (256, 256, 3, 3),
        "stage4.2.fuse_layers.3.0.2.1.running_mean": (256,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    assert {k.split(".")[0] for k in shapes} == OFFICIAL_TOP_LEVEL
    # Where the official code has None, nothing is stored.
    absent = ("transition2.0.", "transition2.1.", "stage2.0.fuse_layers.0.0.",
              "stage4.0.fuse_layers.3.3.", "stage2.0.branches.0.0.downsample")
    assert not [k for k in shapes if k.startswith(absent)]
    assert not [k for k in shapes if "attention" in k]
    # 4 / 4 / 3 modules: stage3 has modules 0..3, stage4 0..2, and blocks 0..3 per branch.
    assert "stage3.3.branches.2.3.bn2.weight" in shapes
    assert not [k for k in shapes if k.startswith(("stage3.4.", "stage4.3.", "stage2.1."))]


def test_hrnet_w18_small_layout():
    net = HRNet(backbone_preset("hrnet_w18_small"))
    keys = set(net.state_dict())
    assert "layer1.1.conv3.weight" in keys and "layer1.2.conv1.weight" not in keys
    assert "stage2.0.branches.1.1.conv2.weight" in keys
    assert "stage2.0.branches.1.2.conv1.weight" not in keys
    assert "stage3.2.fuse_layers.2.1.0.0.weight" in keys and "stage3.3.branches.0.0.bn1.weight" \
        not in keys
    assert "stage4.1.branches.3.1.conv1.weight" in keys and "stage4.2.fuse_layers.0.1.0.weight" \
        not in keys
    assert net.out_channels == [18, 36, 72, 144]


@pytest.mark.parametrize("name", sorted(BACKBONE_PRESETS))
def test_branch_outputs_have_preset_widths_and_strides(name):
    net = HRNet(backbone_preset(name)).eval()
    with torch.no_grad():
        features = net(torch.randn(2, 3, 64, 96))
    widths = list(backbone_preset(name).stage4.num_channels)
    assert [f.shape[1] for f in features] == widths
    assert [tuple(f.shape[2:]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert net.strides == [4, 8, 16, 32]
    assert all(torch.isfinite(f).all() for f in features)


def test_attention_switch_adds_only_attention_keys():
    plain = backbone_preset("hrnet_w18_small")
    with_attention = HRNet(plain.with_attention(True))
    keys_plain = set(HRNet(plain).state_dict())
    keys_attention = set(with_attention.state_dict())
    extra = keys_attention - keys_plain
    assert keys_plain <= keys_attention
    assert extra and all(".attention_block." in k for k in extra)
    # One attention module per residual block: 2 in layer1 and 2 per branch in every module.
    blocks = 2 + 1 * 2 * 2 + 3 * 3 * 2 + 2 * 4 * 2
    assert sum(isinstance(m, Attention) for m in with_attention.modules()) == blocks
    assert HRNet(backbone_preset("benet").with_attention(False)).state_dict().keys().isdisjoint(
        {k for k in HRNet(backbone_preset("benet")).state_dict() if "attention" in k})


def test_attention_gates_are_in_unit_range():
    from caer_ros.model.config import AttentionConfig

    attention = Attention(16, AttentionConfig(reduction=2, spatial_kernel=7))
    x = torch.randn(2, 16, 8, 8)
    channel = attention.channel_gate(x)
    assert channel.shape == (2, 16, 1, 1)
    assert ((channel > 0) & (channel < 1)).all()
    spatial = attention.spatial_gate(x)
    assert spatial.shape == (2, 1, 8, 8)
    out = attention(x)
    assert torch.allclose(out, x * channel * attention.spatial_gate(x * channel))
    assert count(attention) == 16 * 8 + 8 + 8 * 16 + 16 + 2 * 49
