"""Loading pretrained backbone weights by name: prefixes, counts, shape mismatches."""

from __future__ import annotations

import logging

import pytest
import torch

from caer_ros.model import (
    BackboneWeightsError,
    HRNet,
    ModelConfig,
    build_model,
    load_backbone_weights,
    save_model_file,
)
from caer_ros.model.config import backbone_preset
from caer_ros.model.weights import find_prefix

SIZE = (64, 64)


def backbone(seed: int, preset: str = "hrnet_w18_small", attention: bool = False) -> HRNet:
    torch.manual_seed(seed)
    return HRNet(backbone_preset(preset).with_attention(attention)).eval()


def perturbed_state(net: HRNet) -> dict[str, torch.Tensor]:
    """A state dict unlike a fresh initialisation (non-trivial BN statistics too)."""
    generator = torch.Generator().manual_seed(99)
    state = {}
    for key, value in net.state_dict().items():
        if value.is_floating_point():
            noise = torch.rand(value.shape, generator=generator)
            value = value + noise if "running_var" in key else value + 0.1 * (noise - 0.5)
        state[key] = value
    return state


def test_state_dict_from_another_instance_gives_identical_outputs(caplog):
    source = perturbed_state(backbone(1))
    target = backbone(2)
    images = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        before = target(images)[0].clone()
    with caplog.at_level(logging.INFO, logger="caer_ros.model.weights"):
        report = load_backbone_weights(target, source)
    assert report.loaded == len(source)
    assert report.missing == [] and report.unexpected == [] and report.prefix == ""
    assert f"{len(source)} tensors loaded, 0 missing, 0 unexpected" in caplog.text
    reference = backbone(3)
    reference.load_state_dict(source)
    with torch.no_grad():
        after, expected = target(images), reference(images)
    assert not torch.allclose(before, after[0])
    for a, b in zip(after, expected, strict=True):
        assert torch.equal(a, b)


def test_prefixed_training_checkpoint_into_a_benet_model(tmp_path):
    source = backbone(1)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in
                                          perturbed_state(source).items()}}
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)
    model = build_model(ModelConfig(backbone="hrnet_w18_small", input_size=SIZE), seed=0)
    report = load_backbone_weights(model, path)
    assert report.prefix == "module."
    assert report.loaded == len(source.state_dict())
    assert report.source == str(path)
    loaded = model.backbone.state_dict()
    for key, value in wrapped["state_dict"].items():
        assert torch.equal(loaded[key[len("module."):]], value)


def test_backbone_of_a_caer_ros_model_file_loads(tmp_path):
    donor = build_model(ModelConfig(backbone="hrnet_w18_small", input_size=SIZE), seed=5)
    path = save_model_file(tmp_path / "donor.pt", donor)
    target = backbone(0)
    report = load_backbone_weights(target, path)
    assert report.prefix == "backbone."
    assert report.loaded == len(target.state_dict())
    assert report.missing == []
    assert report.unexpected and not [k for k in report.unexpected if k.startswith("backbone.")]
    expected = donor.backbone.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in target.state_dict().items())


def test_official_head_keys_are_unexpected_and_absent_keys_missing():
    state = dict(backbone(1).state_dict())
    dropped = ["stage4.1.fuse_layers.1.0.0.0.weight", "transition3.3.0.1.bias"]
    for key in dropped:
        del state[key]
    state.pop("bn1.num_batches_tracked")  # older checkpoints lack it: not reported
    head = {
        "incre_modules.0.0.conv1.weight": torch.zeros(32, 18, 1, 1),
        "downsamp_modules.0.0.weight": torch.zeros(256, 128, 3, 3),
        "final_layer.0.weight": torch.zeros(2048, 1024, 1, 1),
        "classifier.weight": torch.zeros(1000, 2048),
        "final_layers.0.weight": torch.zeros(17, 32, 1, 1),  # HigherHRNet head
        "deconv_layers.0.0.0.weight": torch.zeros(49, 32, 4, 4),
    }
    report = load_backbone_weights(backbone(2), {**state, **head})
    assert sorted(report.unexpected) == sorted(head)
    assert sorted(report.missing) == sorted(dropped)
    assert report.loaded == len(state)


def test_plain_weights_into_attention_backbone_miss_only_attention():
    plain = backbone(1)
    target = backbone(2, attention=True)
    report = load_backbone_weights(target, plain.state_dict())
    assert report.missing and all(".attention_block." in k for k in report.missing)
    assert report.loaded == len(plain.state_dict()) and report.unexpected == []


def test_shape_mismatch_is_skipped_naming_tensor_and_shapes():
    state = dict(backbone(1).state_dict())
    state["transition1.0.0.weight"] = torch.zeros(32, 256, 3, 3)  # a W32 tensor in W18
    target = backbone(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_backbone_weights(target, state)
    assert len(report.skipped) == 1
    message = report.skipped[0]
    assert "transition1.0.0.weight" in message
    assert "(32, 256, 3, 3)" in message and "(18, 256, 3, 3)" in message
    assert "1 skipped" in report.summary()
    assert report.loaded == len(state) - 1
    after = target.state_dict()
    assert torch.equal(after["transition1.0.0.weight"], before["transition1.0.0.weight"])
    assert torch.equal(after["conv1.weight"], state["conv1.weight"])


def test_nothing_loadable_is_refused_naming_a_shape():
    state = {"transition1.0.0.weight": torch.zeros(32, 256, 3, 3)}
    with pytest.raises(BackboneWeightsError, match=r"no backbone tensor loads.*"
                                                   r"transition1\.0\.0\.weight"):
        load_backbone_weights(backbone(2), state)


def test_unusable_sources_raise(tmp_path):
    with pytest.raises(BackboneWeightsError, match="no such file"):
        load_backbone_weights(backbone(0), tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00 definitely not a checkpoint" * 10)
    with pytest.raises(BackboneWeightsError, match="junk.pth"):
        load_backbone_weights(backbone(0), junk)
    with pytest.raises(BackboneWeightsError, match="no backbone tensor"):
        load_backbone_weights(backbone(0), {"fc.weight": torch.zeros(3, 3)})
    with pytest.raises(TypeError, match="HRNet"):
        load_backbone_weights(torch.nn.Linear(2, 2), {})


def test_find_prefix_prefers_the_most_common_then_shortest():
    target = {"conv1.weight", "layer1.0.conv1.weight", "stage2.0.branches.0.0.conv1.weight"}
    keys = ["model.backbone.conv1.weight", "model.backbone.layer1.0.conv1.weight",
            "model.head.blocks.0.conv1.weight"]
    assert find_prefix(keys, target) == "model.backbone."
    assert find_prefix(["conv1.weight", "x.conv1.weight"], target) == ""
    assert find_prefix(["unrelated"], target) == ""


def test_standard_w32_and_higherhrnet_checkpoints_start_benet(tmp_path):
    """BENet's archive ships ImageNet HRNet-W32 and COCO HigherHRNet-W32 backbones: standard
    layout, 4 blocks per branch, more modules, no attention. Every tensor whose name and shape
    match loads; the rest is counted, nothing fails."""
    standard = perturbed_state(backbone(4, "hrnet_w32"))
    higher = {f"module.{k}": v for k, v in standard.items()}
    higher["module.final_layers.0.weight"] = torch.zeros(34, 32, 1, 1)  # HigherHRNet's heads
    higher["module.deconv_layers.0.0.0.weight"] = torch.zeros(66, 32, 4, 4)
    torch.save({"state_dict": higher}, tmp_path / "pose_higher_hrnet_w32_512.pth")
    for source in (standard, tmp_path / "pose_higher_hrnet_w32_512.pth"):
        model = build_model(ModelConfig(input_size=SIZE), seed=0)
        report = load_backbone_weights(model, source)
        own = model.backbone.state_dict()
        shared = [k for k in own if k in standard and own[k].shape == standard[k].shape]
        assert report.loaded == len(shared) > 900
        assert report.skipped == []
        # missing: the attention, and stage 2's second module (the standard layout has one)
        assert report.missing and all(".attention_block." in k or k.startswith("stage2.1.")
                                      for k in report.missing)
        # stage 3's modules 2-3 and every block 3 of the standard layout have no place here
        assert any(".stage3.3." in f".{k}" for k in report.unexpected)
        assert any(".branches.0.3." in k for k in report.unexpected)
        assert all(torch.equal(own[k], standard[k]) for k in shared)
        assert f"{len(shared)} tensors loaded" in report.summary()
