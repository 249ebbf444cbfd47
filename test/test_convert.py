"""BENet's released models: conversion (python -m caer_ros.convert), parity with the public
model's outputs (torch and ONNX Runtime), the converted model in emotion_node, bad files.

Weights are made by the fixtures' rule (test/helpers/benet_reference.py) from the public
state-dict keys, written as each kind of file of the released archive, converted through the
command line and compared with the public model's outputs stored in the fixtures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.benet_reference import (
    ARCHIVE_SHAPES,
    LAYOUTS,
    fixture,
    relative_error,
    rule_state_dict,
    write_archive_file,
)

from caer_ros import convert
from caer_ros.labels import EMOTIC, HECO
from caer_ros.model import load_model_file, parameter_counts, reference_outputs
from caer_ros.model.public_benet import UNUSED_PREFIXES

TOLERANCE = 1e-4  # max error over max magnitude; a wrong detail gives 1e-2 or more
FIXTURE_SIZE = "128x192"  # the fixtures' input
PUBLIC_PARAMETERS = {"emotic": 19_499_851}  # keys_emotic.tsv, fusion MLP included


@pytest.fixture(scope="module")
def public_states():
    return {layout: rule_state_dict(layout) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def converted_heco(public_states, tmp_path_factory):
    """The EMOTIC + HECO layout converted from a checkpoint.pth.tar: (model file, model)."""
    folder = tmp_path_factory.mktemp("converted")
    source = write_archive_file(public_states["emotic_heco"], "checkpoint",
                                folder / "checkpoint.pth.tar")
    out = folder / "benet_heco.pt"
    assert convert.main(["benet", str(source), "--out", str(out),
                         "--input-size", FIXTURE_SIZE]) == 0
    return out, load_model_file(out)[0]


def _check_parity(model, layout: str) -> None:
    expected = fixture(layout)
    got = reference_outputs(model, torch.from_numpy(expected["input"]))
    names = {"hm_0", "hw_0", "bu_0", "hm_1", "hw_1", "bu_1", "pc", "context"}
    if layout == "emotic_heco":
        names |= {"bu_mixed_0", "bu_mixed_1"}
    assert set(got) == names
    for name, value in got.items():
        assert value.shape == expected[name].shape, name
        assert relative_error(value.numpy(), expected[name]) < TOLERANCE, name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", ARCHIVE_SHAPES)
def test_converted_archive_file_gives_the_public_outputs(public_states, tmp_path, capsys,
                                                         layout, shape):
    source = write_archive_file(public_states[layout], shape, tmp_path / "model_best.pth.tar")
    out = tmp_path / "benet.pt"
    assert convert.main(["benet", str(source), "--out", str(out),
                         "--input-size", FIXTURE_SIZE]) == 0
    assert "wrote" in capsys.readouterr().out
    model, info = load_model_file(out)
    heco = layout == "emotic_heco"
    assert info.config.categories == ({"emotic": EMOTIC, "heco": HECO} if heco
                                      else {"emotic": EMOTIC})
    # the public BENet trained HECO's maps with its sigmoid focal loss: sigmoid scores
    assert set(info.config.scores.values()) == {"sigmoid"}
    settings = info.inference
    assert (settings.detection_threshold, settings.peak_kernel, settings.top_k) == (0.1, 5, 15)
    # the public test path (pipeline reference), letterboxed into the fixed --input-size
    assert settings.fuse_scales and settings.fuse_sizes == "mean" and settings.flip_test
    assert (settings.fuse_upsample, settings.peak_resolution, settings.extraction,
            settings.resize) == ("logits", "input", "center", "letterbox")
    _check_parity(model, layout)
    if not heco:  # every released tensor but the unused fusion MLP is in the network
        unused = sum(v.numel() for k, v in public_states[layout].items()
                     if k.startswith(UNUSED_PREFIXES))
        assert parameter_counts(model).total + unused == PUBLIC_PARAMETERS[layout]


def test_converted_model_exported_runs_the_same_in_onnx_runtime(converted_heco, tmp_path):
    from caer_ros.inference.export import export_with_summary
    from caer_ros.inference.graph import InferenceGraph
    from caer_ros.inference.runners import OnnxRunner

    path, model = converted_heco
    onnx_path = tmp_path / "benet_heco.onnx"
    export_with_summary(path, onnx_path, flip_test=True, verify=False)
    runner, info = OnnxRunner.open(onnx_path, "cpu", None, False)
    assert info.inference.flip_test and info.inference.fuse_sizes == "mean"
    image = fixture("emotic_heco")["input"]
    got = runner.run(image)
    expected = InferenceGraph(model, info.inference).eval().outputs(torch.from_numpy(image))
    assert set(got) == set(expected) >= {"heatmap", "size", "emotion_sums.emotic",
                                         "emotion_sums.heco"}
    for name, value in expected.items():
        assert relative_error(np.asarray(got[name]), value.detach().numpy()) < TOLERANCE, name


def test_public_scale_fusion_upsamples_logits_and_averages_sizes(converted_heco):
    from caer_ros.inference.graph import score_maps

    _, model = converted_heco
    image = torch.from_numpy(fixture("emotic_heco")["input"])
    with torch.no_grad():
        output = model(image, classifiers=False)
    settings = load_model_file(converted_heco[0])[1].inference
    fused = score_maps(output, dataclasses.replace(settings, flip_test=False))

    def up(maps):
        return torch.nn.functional.interpolate(maps, scale_factor=2, mode="bilinear",
                                               align_corners=False)

    # sizes in input pixels: the upsampled 1/4 sizes (x4) and the 1/2 ones (x2), averaged
    torch.testing.assert_close(fused.size, (up(output.quarter.size * 4)
                                            + output.half.size * 2) / 2)
    # the 1/4 logits upsampled, then the sigmoid, then the mean with the 1/2 probabilities
    heat = (up(output.quarter.heatmap).sigmoid() + output.half.heatmap.sigmoid()) / 2
    torch.testing.assert_close(fused.heatmap, heat)
    heco = (up(output.quarter.emotions["heco"]).sigmoid()
            + output.half.emotions["heco"].sigmoid()) / 2
    torch.testing.assert_close(fused.emotions["heco"], heco)
    probabilities_first = (up(output.quarter.heatmap.sigmoid())
                           + output.half.heatmap.sigmoid()) / 2
    assert not torch.allclose(fused.heatmap, probabilities_first, atol=1e-6, rtol=0), \
        "the two fusion orders must differ on these maps for the check above to mean anything"


def test_thresholds_from_a_json_file_are_stored(public_states, tmp_path):
    source = write_archive_file(public_states["emotic"], "plain", tmp_path / "best.pth.tar")
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"emotic": [0.25] * 26}))
    out = tmp_path / "benet.pt"
    assert convert.main(["benet", str(source), "--out", str(out), "--flip-test",
                         "--thresholds-from", str(thresholds)]) == 0
    info = load_model_file(out)[1]
    assert info.inference.emotion_thresholds == {"emotic": (0.25,) * 26}
    assert info.inference.flip_test and info.config.input_size == (512, 512)
    thresholds.write_text('{"emotic": [0.25]}')
    bad = tmp_path / "bad.pt"
    assert convert.main(["benet", str(source), "--out", str(bad),
                         "--thresholds-from", str(thresholds)]) == 2
    assert not bad.exists()


def test_missing_and_foreign_tensors_are_named(public_states, tmp_path, capsys):
    state = dict(public_states["emotic"])
    del state["stage4.1.fuse_layers.0.1.0.weight"]
    state["hm_final_layers.0.9.0.weight"] = torch.zeros(1)
    source = write_archive_file(state, "plain", tmp_path / "edited.pth.tar")
    out = tmp_path / "out.pt"
    assert convert.main(["benet", str(source), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "hm_final_layers.0.9.0.weight" in message
    assert "backbone.stage4.1.fuse_layers.0.1.0.weight" in message
    assert len(message.strip().splitlines()) == 1 and not out.exists()


class _Payload:
    """Unpickling this would run a shell command (what weights_only loading refuses)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _bad_sources(tmp_path, public_states) -> dict[str, object]:
    unrelated = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)},
               unrelated)
    whole = write_archive_file(public_states["emotic"], "plain", tmp_path / "whole.pth.tar")
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    payload = tmp_path / "payload.pth.tar"  # torch.save's format, a code-running object inside
    marker = tmp_path / "ran"
    torch.save({"state_dict": _Payload(marker)}, payload)
    raw = tmp_path / "raw_pickle.pth.tar"  # a bare pickle of the same
    raw.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    return {"unrelated": unrelated, "truncated": truncated, "payload": payload,
            "raw_pickle": raw, "marker": marker}


def test_bad_files_get_one_line_and_exit_2_with_nothing_written(public_states, tmp_path,
                                                                capsys):
    sources = _bad_sources(tmp_path, public_states)
    expected = {"unrelated": "not a BENet state dict", "truncated": "truncated or corrupted",
                "payload": "refused", "raw_pickle": "not a PyTorch file"}
    for name, phrase in expected.items():
        out = tmp_path / f"{name}.pt"
        argv = ["benet", str(sources[name]), "--out", str(out)]
        if name == "payload":  # the real command once, in a process of its own
            result = subprocess.run([sys.executable, "-m", "caer_ros.convert", *argv],
                                    capture_output=True, text=True, timeout=120)
            code, err = result.returncode, result.stderr
        else:
            code, err = convert.main(argv), capsys.readouterr().err
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0], (name, err)
        assert str(sources[name]) in lines[0]
        assert "Traceback" not in err
        assert not out.exists(), name
        assert not list(tmp_path.glob(f".{name}.pt.*")), "a temporary file was left"
    assert not sources["marker"].exists(), "the pickle payload ran"


# --------------------------------------------------------------------------- node


@pytest.mark.parametrize("category_set", ["", "heco"])
def test_converted_model_answers_in_emotion_node(converted_heco, tmp_path, category_set):
    import cv2
    from helpers.node_probe import NodeProbe, image_msg, start_node, stop_node
    from skimage import data

    path, _ = converted_heco
    domain = random.SystemRandom().randint(1, 100)
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "node.log"
    chosen = ["-p", f"category_set:={category_set}"] if category_set else []
    process = start_node(env, log, "-p", f"model_path:={path}", "-p", "backend:=torch",
                         "-p", "qos_reliability:=reliable", *chosen)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        probe = NodeProbe(domain, reliable=True)
    try:
        assert probe.wait_for_node(process, "raw", 60.0), log.read_text()
        frame = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        msg = probe.stamp(image_msg(frame), frame_id="camera")
        answer, _ = probe.answer(msg, 60.0, process)
        assert answer is not None, log.read_text()[-3000:]
        names = HECO if category_set == "heco" else EMOTIC
        assert tuple(answer.categories) == names
        assert answer.header == msg.header
        assert answer.people, "the rule's weights find people on the photo: checks would be void"
        for person in answer.people:
            assert len(person.scores) == len(names)
            assert all(0.0 <= s <= 1.0 for s in person.scores)
            if category_set == "heco":  # single-label: the top category alone
                assert list(person.labels) == [names[int(np.argmax(person.scores))]]
            assert np.isnan(person.valence)  # no continuous head in BENet
    finally:
        probe.close()
        stop_node(process, signal.SIGINT)
