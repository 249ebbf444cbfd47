"""caer_ros.model (pure PyTorch/numpy; imports neither rclpy nor training code).

BENet (Cladiere et al., 2023) and the KA student (Cladiere et al., 2024): an HRNet backbone
(``hrnet``, ``blocks``, ``attention``), the detection / emotion-map / classification heads
(``heads``), the students' compact torchvision backbones (``student``), their assembly
(``network``), configs (``config``, ``inference_settings``), the model file (``checkpoint``),
pretrained-backbone loading (``weights``) and BENet's released weights in our names
(``public_benet``: key mapping, :func:`reference_outputs`).

The names below are imported on first use (PEP 562), so importing a torch-free module of the
package (``config``, ``inference_settings``, ``checkpoint``'s error and file classes) does not
import torch: an ONNX model runs on a robot without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caer_ros.model.checkpoint import (
        ModelFile,
        ModelFileError,
        load_model_file,
        read_model_file,
        save_model_file,
    )
    from caer_ros.model.config import (
        BACKBONE_PRESETS,
        STUDENT_BACKBONES,
        STUDENT_PRESETS,
        AttentionConfig,
        BackboneConfig,
        ModelConfig,
        StageConfig,
        backbone_preset,
    )
    from caer_ros.model.hrnet import HRNet
    from caer_ros.model.inference_settings import InferenceSettings
    from caer_ros.model.network import BENet, build_model
    from caer_ros.model.output import BENetOutput, ScaleOutput
    from caer_ros.model.params import ParameterCounts, parameter_counts
    from caer_ros.model.public_benet import reference_outputs
    from caer_ros.model.weights import BackboneWeightsError, LoadReport, load_backbone_weights

# name -> the submodule that defines it
_SOURCES = {
    "ModelFile": "checkpoint",
    "ModelFileError": "checkpoint",
    "load_model_file": "checkpoint",
    "read_model_file": "checkpoint",
    "save_model_file": "checkpoint",
    "BACKBONE_PRESETS": "config",
    "STUDENT_BACKBONES": "config",
    "STUDENT_PRESETS": "config",
    "AttentionConfig": "config",
    "BackboneConfig": "config",
    "ModelConfig": "config",
    "StageConfig": "config",
    "backbone_preset": "config",
    "HRNet": "hrnet",
    "InferenceSettings": "inference_settings",
    "BENet": "network",
    "build_model": "network",
    "BENetOutput": "output",
    "ScaleOutput": "output",
    "ParameterCounts": "params",
    "parameter_counts": "params",
    "reference_outputs": "public_benet",
    "BackboneWeightsError": "weights",
    "LoadReport": "weights",
    "load_backbone_weights": "weights",
}

__all__ = [
    "BACKBONE_PRESETS",
    "STUDENT_BACKBONES",
    "STUDENT_PRESETS",
    "AttentionConfig",
    "BENet",
    "BENetOutput",
    "BackboneConfig",
    "BackboneWeightsError",
    "HRNet",
    "InferenceSettings",
    "LoadReport",
    "ModelConfig",
    "ModelFile",
    "ModelFileError",
    "ParameterCounts",
    "ScaleOutput",
    "StageConfig",
    "backbone_preset",
    "build_model",
    "load_backbone_weights",
    "load_model_file",
    "parameter_counts",
    "read_model_file",
    "reference_outputs",
    "save_model_file",
]


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
