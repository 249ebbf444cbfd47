"""Scores follow the loss a category set was trained with (ModelConfig.scores): a set trained
with cross-entropy (HECO, one label per person) is scored with a softmax over its categories
everywhere - the inference graph in torch and ONNX Runtime, the BU+PC fusion, the evaluator's
box reading and the node's messages - while a sigmoid-trained set stays a sigmoid per
category. Old model files, without the field, read as sigmoid."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.node_probe import image_msg
from helpers.small_model import write_small_model
from std_msgs.msg import Header

from caer_ros.inference.export import export_onnx
from caer_ros.inference.predictor import Predictor
from caer_ros.model.checkpoint import load_model_file
from caer_ros.model.config import ModelConfig
from caer_ros.ros.emotion_node import frame_settings
from caer_ros.ros.frame_path import process_frame
from caer_ros.ros.params import NodeParams
from training.config import ConfigError, load_config
from training.datasets.synthetic import render_scene

SOFTMAX_HECO = {"heco": "softmax"}


@pytest.fixture(scope="module")
def softmax_files(tmp_path_factory):
    """The small test model with HECO scored by a softmax, as .pt and as ONNX (with the BU+PC
    fusion, so the person-centric scores are in the graph too)."""
    folder = tmp_path_factory.mktemp("softmax_model")
    pt = write_small_model(folder / "small.pt", seed=3, attention=False, backbone="hrnet_cpu",
                           scores=SOFTMAX_HECO)
    onnx = export_onnx(pt, folder / "small.onnx", fusion="mean")
    return pt, onnx


def _scene() -> np.ndarray:
    image, _, _ = render_scene(np.random.default_rng(4), 128)
    return image


def test_the_model_file_records_the_scores_and_old_files_read_sigmoid(softmax_files):
    pt, _ = softmax_files
    _, info = load_model_file(pt)
    assert info.config.scores == {"emotic": "sigmoid", "heco": "softmax"}
    assert info.config.softmax_sets == {"heco"}
    old = info.config.to_dict()
    del old["scores"]  # a file written before the field existed
    assert ModelConfig.from_dict(old).scores == {"emotic": "sigmoid", "heco": "sigmoid"}
    with pytest.raises(ValueError, match="scores.heco must be one of sigmoid, softmax"):
        ModelConfig(categories={"heco": ("a", "b")}, scores={"heco": "tanh"})
    with pytest.raises(ValueError, match="not category sets of the model"):
        ModelConfig(scores={"heco": "softmax"})


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_softmax_set_sums_to_one_per_person_in_both_backends_and_with_fusion(
        softmax_files, backend):
    pt, onnx = softmax_files
    image = _scene()
    for fusion in ("none", "mean") if backend == "torch" else ("mean",):  # fixed in ONNX
        predictor = Predictor.from_file(onnx if backend == "onnxruntime" else pt,
                                        fusion=fusion)
        people = predictor.predict(image, detection_threshold=0.0, max_people=5)
        assert len(people.boxes) == 5
        heco, emotic = people.set_scores["heco"], people.set_scores["emotic"]
        np.testing.assert_allclose(heco.sum(axis=1), 1.0, atol=1e-5)
        assert np.all(heco > 0)
        assert np.all(np.abs(emotic.sum(axis=1) - 1.0) > 0.5)  # sigmoid: independent scores
        # the evaluator's reading with given boxes: the same probabilities
        read = predictor.read_boxes(image, people.boxes)
        np.testing.assert_allclose(read.set_scores["heco"].sum(axis=1), 1.0, atol=1e-5)


def test_the_node_publishes_the_softmax_scores(softmax_files):
    """The node's frame path (real generated messages), category_set heco: each person's
    published scores are a distribution over HECO's 8 categories."""
    _, onnx = softmax_files
    params = NodeParams(model_path=str(onnx), category_set="heco")
    predictor = Predictor.from_file(onnx)
    predictor.use_category_set(params.category_set)
    settings = frame_settings(params, predictor)
    msg = image_msg(_scene(), "bgr8")
    msg.header = Header(frame_id="camera")
    answer = process_frame(msg, predictor, settings).people
    assert answer.categories == list(predictor.categories) and len(answer.categories) == 8
    assert answer.people
    for person in answer.people:
        assert sum(person.scores) == pytest.approx(1.0, abs=1e-5)


def test_training_scores_a_cross_entropy_set_with_a_softmax():
    config = load_config(None, ["model.categories=[emotic,heco]", "emotion_loss={heco: ce}"])
    assert config.model.scores == {"emotic": "sigmoid", "heco": "softmax"}
    focal = load_config(None, ["model.categories=[emotic,heco]"])
    assert focal.model.scores == {"emotic": "sigmoid", "heco": "sigmoid"}
    with pytest.raises(ConfigError, match="model.scores.heco is 'sigmoid'.*follows emotion_loss"):
        load_config(None, ["model.categories=[emotic,heco]", "emotion_loss={heco: ce}",
                           "model.scores={heco: sigmoid}"])
