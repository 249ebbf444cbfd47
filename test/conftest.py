"""Shared fixtures. ROS tests run with discovery on loopback only and a domain id of their own."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ros_env(monkeypatch):
    """Environment for ROS processes of one test: localhost discovery, a random domain id.

    Sets the variables in this process (for rclpy.init here) and returns a copy of the whole
    environment for subprocesses.
    """
    domain = random.SystemRandom().randint(1, 100)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return dict(os.environ)


@pytest.fixture(scope="session")
def small_model_pt(tmp_path_factory):
    """The small test model (test/helpers/small_model.py) as a .pt model file, written once per
    session by the real code (a second or so; its ONNX export takes longer)."""
    from helpers.small_model import write_small_model

    return write_small_model(tmp_path_factory.mktemp("small_model") / "small.pt")


@pytest.fixture(scope="session")
def small_model_files(small_model_pt):
    """(model file .pt, its ONNX export, beside it) of the small test model, written once per
    session by the real code."""
    from caer_ros.inference.export import export_onnx

    return small_model_pt, export_onnx(small_model_pt, small_model_pt.parent / "small.onnx")


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """A small synthetic CAER dataset (EMOTIC format + HECO CSV): 12 images of 96 px, split
    8 train / 2 val / 2 test, written once per session by the real generator."""
    from training.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, images=12, seed=3, size=96, heco=True)
    return root
