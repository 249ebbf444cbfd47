"""Command-line options for the inference settings that shape the graph (flip test, scale
fusion, BENet's test path: input resize, logit fusion, peak resolution), shared by
``caer-infer``, ``python -m caer_ros.export`` and ``python -m training.evaluate``.

Each option defaults to None: the model file's own setting (:mod:`caer_ros.model.
inference_settings`). :func:`setting_changes` gives the ones given, for
``dataclasses.replace`` or ``Predictor.from_file(changes=...)``.
"""

from __future__ import annotations

import argparse
from typing import Any

from caer_ros.model.inference_settings import (
    PEAK_RESOLUTIONS,
    RESIZES,
    SIZE_SOURCES,
    UPSAMPLED,
)

OPTIONS = ("fuse_scales", "fuse_sizes", "flip_test", "fuse_upsample", "resize",
           "peak_resolution")


def add_setting_arguments(parser: argparse.ArgumentParser, note: str = "") -> None:
    """``--fuse-scales/--no-fuse-scales``, ``--fuse-sizes``, ``--flip-test/--no-flip-test``,
    ``--fuse-upsample``, ``--resize``, ``--peak-resolution``; ``note`` is appended to each help
    text (e.g. that an ONNX graph fixes them)."""
    parser.add_argument("--fuse-scales", action=argparse.BooleanOptionalAction, default=None,
                        help="average the 1/4 and 1/2 outputs; --no-fuse-scales is the fast "
                             "head mode: the 1/2-resolution branches are not computed "
                             f"(default: the model file's setting){note}")
    parser.add_argument("--fuse-sizes", choices=SIZE_SOURCES, default=None,
                        help="fused box sizes: mean of both scales (as BENet's public code), "
                             "or quarter: the 1/4 sizes alone (default: the model file's "
                             f"setting){note}")
    parser.add_argument("--fuse-upsample", choices=UPSAMPLED, default=None,
                        help="what the 1/4 maps are upsampled as before the scales are "
                             "averaged: probabilities, or logits (then the sigmoid, as BENet's "
                             f"public code) (default: the model file's setting){note}")
    parser.add_argument("--resize", choices=RESIZES, default=None,
                        help="letterbox: every frame into the model's fixed input size; "
                             "short_side: the short side to the model's short_side, the long "
                             "side following the frame (BENet's test path) (default: the model "
                             f"file's setting){note}")
    parser.add_argument("--peak-resolution", choices=PEAK_RESOLUTIONS, default=None,
                        help="map: peaks on the output grid; input: on the heatmap upsampled "
                             "to the input, whole-pixel boxes (BENet's public code) (default: "
                             f"the model file's setting){note}")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the mirrored image and average, doubling the work "
                             f"(default: the model file's setting){note}")


def setting_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, name -> value."""
    return {name: getattr(args, name) for name in OPTIONS
            if getattr(args, name, None) is not None}
