"""Test-side reference decoding in torch: a raw :class:`~caer_ros.model.output.BENetOutput`
straight to people (:func:`decode`), and per-box values of plain maps (:func:`extract_scores`).

The product decodes the inference graph's summed maps (:mod:`caer_ros.inference.graph` in
torch or ONNX Runtime, then :func:`caer_ros.inference.decode.find_people`); these two functions
run the same steps from the network's logits, so the tests can check the exported graph and
the host-side reading against an independent path.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import torch
from torch import Tensor

from caer_ros.inference.decode import Detections, SummedMaps, as_numpy, find_people, read_scores
from caer_ros.inference.graph import column_sums, score_maps
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.output import BENetOutput


def extract_scores(maps: Tensor | np.ndarray, boxes: Tensor | np.ndarray,
                   mode: str = "box_mean", stride: float = 1.0) -> Tensor | np.ndarray:
    """Per-box values of plain maps (not summed): ``maps`` (B, C, h, w) with ``boxes``
    (B, K, 4), or one image: (C, h, w) with (K, 4). ``boxes`` are x1, y1, x2, y2 in pixels of
    an input ``stride`` times finer than the map (``stride=1``: map pixels). Returns (B, K, C)
    or (K, C), a tensor (detached) if ``maps`` was one. Same rules as :func:`read_scores`.
    """
    is_tensor = isinstance(maps, Tensor)
    m = np.asarray(as_numpy(maps), dtype=np.float64)
    b = np.asarray(as_numpy(boxes), dtype=np.float64)
    single = m.ndim == 3
    if single:
        m, b = m[None], b[None]
    if m.ndim != 4 or b.ndim != 3 or b.shape[-1] != 4 or b.shape[0] != m.shape[0]:
        raise ValueError(
            "expected maps (B, C, h, w) with boxes (B, K, 4), or (C, h, w) with (K, 4); got "
            f"{tuple(np.shape(maps))} and {tuple(np.shape(boxes))}"
        )
    sums = np.pad(m, ((0, 0), (0, 0), (1, 0), (0, 0))).cumsum(axis=2)
    values = np.stack([read_scores(sums[i], b[i], mode, stride) for i in range(len(m))])
    values = values[0] if single else values
    return torch.from_numpy(values) if is_tensor else values


@torch.no_grad()
def decode(
    output: BENetOutput | Mapping[str, Tensor | np.ndarray],
    settings: InferenceSettings | None = None,
    *,
    flipped: BENetOutput | Mapping[str, Tensor | np.ndarray] | None = None,
    primary_set: str | None = None,
    softmax: Collection[str] = (),
) -> list[Detections]:
    """Raw network output (logits) for a batch -> one :class:`Detections` per image
    (network-input pixels): the graph's steps in torch, then :func:`find_people`.

    ``flipped`` is the output for the horizontally flipped batch (flip test); ``softmax`` the
    emotion sets scored with a softmax (``ModelConfig.softmax_sets``).
    """
    settings = settings or InferenceSettings()
    maps = score_maps(output, settings, flipped, softmax)
    summed = SummedMaps.from_outputs(column_sums(maps), maps.stride)
    return find_people(summed, settings, primary_set=primary_set)
