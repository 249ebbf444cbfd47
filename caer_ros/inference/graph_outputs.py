"""The inference graph's interface without torch: its output names, the strides of its maps
and the settings fixed when it is exported.

:mod:`caer_ros.inference.graph` builds the graph (in torch) and describes the outputs; this
module holds what the host side needs to read them (:mod:`caer_ros.inference.decode`, the
predictor, the ONNX file's metadata), so an ONNX model runs where PyTorch is not installed.
"""

from __future__ import annotations

from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings

HEATMAP = "heatmap"
SIZE = "size"
EMOTION_SUMS = "emotion_sums."  # + category-set name
CONTINUOUS_SUMS = "continuous_sums"
PC_SCORES = "pc_scores."  # + category-set name
GRAPH_SETTINGS: tuple[str, ...] = ("fuse_scales", "fuse_sizes", "fuse_upsample", "flip_test",
                                   "fusion", "peak_resolution", "resize")


def output_stride(config: ModelConfig, settings: InferenceSettings) -> int:
    """Stride of the graph's emotion maps: 2 when 1/4 and 1/2 outputs are fused, else 4."""
    return 2 if config.half_resolution and settings.fuse_scales else 4


def peak_stride(config: ModelConfig, settings: InferenceSettings) -> int:
    """Stride of the graph's heatmap and sizes: 1 with ``peak_resolution`` ``input``, else
    :func:`output_stride`."""
    return 1 if settings.peak_resolution == "input" else output_stride(config, settings)


def output_names(config: ModelConfig, settings: InferenceSettings | None = None) -> list[str]:
    """The graph's output names, in order (see :mod:`caer_ros.inference.graph`); the
    ``pc_scores.<set>`` outputs only when ``settings.fusion`` is ``mean``."""
    names = [HEATMAP, SIZE] + [EMOTION_SUMS + name for name in config.categories]
    names += [CONTINUOUS_SUMS] if config.continuous else []
    if settings is not None and settings.fusion == "mean":
        names += [PC_SCORES + name for name in config.categories]
    return names
