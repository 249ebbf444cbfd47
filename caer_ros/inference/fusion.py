"""BU+PC fusion: each person's bottom-up emotion scores averaged with the person-centric head's
scores on a crop of that person (BENet section 4.3 and Table 4: of the ways to combine the
heads at inference, the mean of the bottom-up and person-centric outputs was best).

Steps, for the people a frame's bottom-up pass found (or the boxes the evaluator gives):

1. :func:`~caer_ros.inference.boxes.subject_crop` - the crop the person-centric head was
   trained on (training's *ExtractSubject*, BENet section 3.3, the same function): the
   person's box clipped to the image, enlarged by ``SUBJECT_MARGIN`` of its width and height
   on each side, clipped to the image again and rounded outward to whole image pixels. A
   degenerate box (no width or height, or wholly outside the image) still gets a crop of at
   least one pixel.
2. :func:`crop_batch` - each crop letterboxed and normalised exactly like a whole frame
   (:func:`~caer_ros.inference.preprocess.preprocess`), all crops as one batch. The predictor
   runs it through the same inference graph, whose ``pc_scores.<set>`` outputs (graph step 6,
   :mod:`caer_ros.inference.graph`) are the person-centric probabilities; its maps are unused.
3. :func:`fuse_mean` - every category set's scores become ``(bottom-up + person-centric) / 2``.
   Continuous values stay the bottom-up head's (the person-centric head has none). Labels are
   derived from the scores downstream (:func:`~caer_ros.inference.decode.labels_over_threshold`),
   so they follow the fused scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from caer_ros.inference.boxes import subject_crop
from caer_ros.inference.decode import Detections
from caer_ros.inference.graph_outputs import PC_SCORES
from caer_ros.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess


def crop_batch(
    image: np.ndarray,
    boxes: np.ndarray,
    input_size: tuple[int, int],
    *,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The crops of ``boxes`` (K, 4) in ``image`` pixels as network inputs (K, 3, H, W) float32
    (step 2); ``image`` as for :func:`~caer_ros.inference.preprocess.preprocess` (BGR).
    ``out``: a C-contiguous (K, 3, H, W) float32 array to fill (e.g. a slice of a larger batch).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    shape = (len(boxes), 3, *input_size)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    height, width = image.shape[:2]
    for k, box in enumerate(boxes):
        r0, r1, c0, c1 = subject_crop(box, height, width)
        preprocess(image[r0:r1, c0:c1], input_size, mean=mean, std=std, out=out[k:k + 1])
    return out


def person_centric_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graph's ``pc_scores.<set>`` outputs as set name -> (K, E) probabilities."""
    return {name[len(PC_SCORES):]: np.asarray(value) for name, value in outputs.items()
            if name.startswith(PC_SCORES)}


def fuse_mean(people: Detections, person_centric: Mapping[str, np.ndarray]) -> Detections:
    """``people`` with every set's scores replaced by the mean of the bottom-up scores and the
    person-centric ones (set name -> (N, E), one row per person in the same order), step 3."""
    fused = {}
    for name, bottom_up in people.set_scores.items():
        if name not in person_centric:
            raise ValueError(f"no person-centric scores for category set {name!r} (the graph "
                             f"has no {PC_SCORES}{name} output: was it exported with fusion "
                             f"'mean'?)")
        pc = np.asarray(person_centric[name], dtype=np.float32)
        if pc.shape != bottom_up.shape:
            raise ValueError(f"person-centric scores of {name!r} are {pc.shape}, the bottom-up "
                             f"ones {bottom_up.shape}")
        fused[name] = np.add(bottom_up, pc, dtype=np.float32) * np.float32(0.5)
    scores = fused.get(people.category_set, people.scores)
    return dataclasses.replace(people, scores=scores, set_scores=fused)
