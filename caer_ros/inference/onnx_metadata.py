"""The caer_ros ONNX file: an exported :class:`~caer_ros.inference.graph.InferenceGraph` whose
``metadata_props`` carry everything else a predictor needs, so the file alone is enough
(DESIGN.md, node contract). Every value is a string; all but the version are JSON::

    caer_ros.format      "caer_ros.onnx"
    caer_ros.version     "1"
    caer_ros.config      ModelConfig.to_dict()  (architecture, categories, input size, norm.)
    caer_ros.categories  {set name: [category names]}  (the same as in the config; for people
                         and tools reading the file without caer_ros)
    caer_ros.inference   InferenceSettings.to_dict()  (graph.GRAPH_SETTINGS are fixed in the
                         graph, whose input height and width are dynamic with resize
                         short_side; the rest are run-time defaults)
    caer_ros.graph       {"input": "images", "outputs": [names], "stride": 1, 2 or 4,
                         "emotion_stride": 2 or 4, "emotion_layout": "row_prefix_sums"}
                         (stride: of the heatmap and sizes; emotion_stride: of the emotion
                         maps, the same as stride when absent (files written before it);
                         outputs include the pc_scores.<set> ones when fusion is mean)
    caer_ros.meta        the model file's meta (trained, seed, created_by, ...) plus the
                         export's (source, opset)

Reading needs neither ``onnx`` nor torch: ONNX Runtime gives the map
(``session.get_modelmeta().custom_metadata_map``). Problems raise
:class:`~caer_ros.model.checkpoint.ModelFileError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from caer_ros.inference.graph_outputs import output_names, output_stride, peak_stride
from caer_ros.model.checkpoint import ModelFile, ModelFileError, upgraded_config
from caer_ros.model.config import ModelConfig
from caer_ros.model.inference_settings import InferenceSettings

FORMAT = "caer_ros.onnx"
VERSION = 1
PREFIX = "caer_ros."
FORMAT_KEY = PREFIX + "format"
VERSION_KEY = PREFIX + "version"
CONFIG_KEY = PREFIX + "config"
CATEGORIES_KEY = PREFIX + "categories"
INFERENCE_KEY = PREFIX + "inference"
GRAPH_KEY = PREFIX + "graph"
META_KEY = PREFIX + "meta"
INPUT_NAME = "images"
EMOTION_LAYOUT = "row_prefix_sums"


@dataclass(frozen=True)
class GraphInfo:
    """The graph's interface as recorded at export."""

    input: str
    outputs: tuple[str, ...]
    stride: int  # of the heatmap and sizes
    emotion_stride: int  # of the emotion and continuous maps


def graph_info(config: ModelConfig, settings: InferenceSettings) -> GraphInfo:
    """The interface of the graph exported for ``config`` and ``settings``."""
    return GraphInfo(INPUT_NAME, tuple(output_names(config, settings)),
                     peak_stride(config, settings), output_stride(config, settings))


def encode(config: ModelConfig, settings: InferenceSettings,
           meta: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file exported for ``config`` and ``settings``."""
    graph = graph_info(config, settings)
    return {
        FORMAT_KEY: FORMAT,
        VERSION_KEY: str(VERSION),
        CONFIG_KEY: json.dumps(config.to_dict()),
        CATEGORIES_KEY: json.dumps({k: list(v) for k, v in config.categories.items()}),
        INFERENCE_KEY: json.dumps(settings.to_dict()),
        GRAPH_KEY: json.dumps({"input": graph.input, "outputs": list(graph.outputs),
                               "stride": graph.stride, "emotion_stride": graph.emotion_stride,
                               "emotion_layout": EMOTION_LAYOUT}),
        META_KEY: json.dumps(dict(meta or {})),
    }


def decode(path: str, props: Mapping[str, str]) -> tuple[ModelFile, GraphInfo]:
    """Read and validate the metadata of the ONNX file ``path``."""
    if FORMAT_KEY not in props:
        raise ModelFileError(path, f"an ONNX model without caer_ros metadata (no {FORMAT_KEY!r} "
                                   f"key); export one with python -m caer_ros.export")
    if props[FORMAT_KEY] != FORMAT:
        raise ModelFileError(path, f"format {props[FORMAT_KEY]!r} is not {FORMAT!r}")
    try:
        version = int(props.get(VERSION_KEY, ""))
    except ValueError:
        raise ModelFileError(path, f"invalid version {props.get(VERSION_KEY)!r}") from None
    if version < 1:
        raise ModelFileError(path, f"invalid version {version}")
    if version > VERSION:
        raise ModelFileError(path, f"version {version} is newer than the supported {VERSION}; "
                                   f"update caer_ros")
    try:
        config = ModelConfig.from_dict(upgraded_config(_json(path, props, CONFIG_KEY)))
    except (ValueError, TypeError) as error:
        raise ModelFileError(path, f"invalid config: {error}") from None
    categories = _json(path, props, CATEGORIES_KEY)
    if categories != {k: list(v) for k, v in config.categories.items()}:
        raise ModelFileError(path, f"{CATEGORIES_KEY} disagrees with the config's categories")
    try:
        settings = InferenceSettings.from_dict(_json(path, props, INFERENCE_KEY))
        settings.check_against(config)
    except (ValueError, TypeError) as error:
        raise ModelFileError(path, f"invalid inference settings: {error}") from None
    graph = _json(path, props, GRAPH_KEY)
    expected = graph_info(config, settings)
    if not isinstance(graph, dict) or graph.get("emotion_layout") != EMOTION_LAYOUT or \
            GraphInfo(graph.get("input"), tuple(graph.get("outputs", ())), graph.get("stride"),
                      graph.get("emotion_stride", graph.get("stride"))) != expected:
        raise ModelFileError(path, f"graph description {graph!r} does not match its config "
                                   f"(expected {expected})")
    meta = _json(path, props, META_KEY)
    return ModelFile(path, config, settings, meta if isinstance(meta, dict) else {},
                     version), expected


def _json(path: str, props: Mapping[str, str], key: str) -> Any:
    if key not in props:
        raise ModelFileError(path, f"caer_ros metadata lacks {key!r}")
    try:
        return json.loads(props[key])
    except (TypeError, ValueError) as error:
        raise ModelFileError(path, f"metadata {key!r} is not valid JSON ({error})") from None
