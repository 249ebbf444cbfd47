"""Convert BENet's released trained models into caer_ros model files.

    python -m caer_ros.convert benet SRC --out DST.pt [--no-flip-test] [--input-size HxW]
        [--thresholds-from FILE]

``SRC`` is any file of the archive BENet's authors released with their code (its ``output/``
folder, one subfolder per ACIVS 2023 Table 1 row): ``model_best.pth.tar`` or
``final_state<gpu>.pth.tar`` (a state dict) or ``checkpoint.pth.tar`` (a dict whose
``state_dict`` is one), with or without DDP's ``module.`` prefix. It is read with
``torch.load(..., weights_only=True)`` (numpy scalars such as a checkpoint's ``best_perf`` are
allowed as plain data): a file that would run code is refused. The layout is
read from the keys (EMOTIC's 26 categories; HECO's 8 second when ``bu_mixed.*`` is present),
every tensor is mapped by name and shape (:mod:`caer_ros.model.public_benet`) and the result is
written, atomically, as a regular model file whose inference settings are the public code's
test path (``../shared/benet_reference``, "Pipeline reference"; docs/models.md, "Use the
paper's trained models"):

- input: the short side to 512 pixels, the long side in proportion rounded up to a multiple of
  64, placed by an affine warp about the frame's centre (``resize: short_side``);
- flip test on (``--no-flip-test``: off, half the network time);
- scale fusion: the 1/4 logits upsampled to the 1/2 grid, then the sigmoid, averaged with the
  1/2 maps (``fuse_upsample: logits``); box sizes the mean of both scales (``fuse_sizes:
  mean``);
- peaks: the fused heatmap upsampled to the input's resolution, a 5x5 window there
  (``peak_resolution: input``, ``peak_kernel: 5``), whole-pixel boxes; at most 15 people,
  detection threshold 0.1;
- emotion scores read at the peak (``extraction: center``).

``--input-size HxW`` instead letterboxes every frame into a fixed input (multiples of 64), as
caer_ros-trained models do; the rest of the path is the same.

``--thresholds-from`` takes per-category emotion thresholds from a caer_ros model file or a
JSON file ``{"emotic": [26 numbers], "heco": [8 numbers]}``; without it every threshold is 0.5
(``python -m training.evaluation.calibrate`` can set them from a labelled split later).

Exit status: 0 written; 2 the source (or thresholds file) is not usable, with one line on
stderr saying why; nothing is written at ``DST`` unless the conversion succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from torch import Tensor

from caer_ros.model.checkpoint import ModelFileError, read_model_file, save_model_file
from caer_ros.model.config import parse_input_size
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.network import BENet
from caer_ros.model.params import parameter_counts
from caer_ros.model.public_benet import (
    PublicLayoutError,
    convert_state_dict,
    public_config,
)
from caer_ros.model.weights import BackboneWeightsError, read_state_dict

# The public code's test settings (its test config): what its published numbers used.
PUBLIC_TEST_SETTINGS = {"detection_threshold": 0.1, "peak_kernel": 5, "top_k": 15,
                        "fuse_scales": True, "fuse_sizes": "mean", "fuse_upsample": "logits",
                        "flip_test": True, "resize": "short_side", "short_side": 512,
                        "size_divisor": 64, "peak_resolution": "input",
                        "extraction": "center"}


class ConversionError(ValueError):
    """A source or option the converter cannot use; the message is one line."""


def read_public_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of an archive file, prefix-free: a checkpoint's ``state_dict`` unwrapped,
    DDP's ``module.`` stripped (read as backbone weights are, ``weights_only=True``)."""
    try:
        tensors, _ = read_state_dict(path)
    except BackboneWeightsError as error:
        raise ConversionError(str(error)) from None
    if not tensors:
        raise ConversionError(f"{path}: holds no tensors, not a state dict")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_thresholds(path: Path) -> dict[str, Any]:
    """Emotion thresholds per category set from a model file or a JSON file."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ConversionError(f"{path}: cannot read thresholds ({error})") from None
        if not isinstance(data, dict):
            raise ConversionError(f"{path}: thresholds must be a JSON object "
                                  f"set name -> list of numbers")
        return data
    try:
        info, _ = read_model_file(path)
    except ModelFileError as error:
        raise ConversionError(str(error)) from None
    return dict(info.inference.emotion_thresholds)


def convert_benet(source: Path, out: Path, *, flip_test: bool = True,
                  input_size: tuple[int, int] | None = None,
                  thresholds: dict[str, Any] | None = None) -> BENet:
    """Convert ``source`` and write the model file ``out``; the converted network is returned.
    ``input_size`` (H, W): letterbox into that fixed size instead of the public short-side
    input. Raises ConversionError (nothing written) on any problem with the inputs."""
    public = read_public_state_dict(source)
    path = dict(PUBLIC_TEST_SETTINGS, flip_test=flip_test)
    if input_size is not None:
        path["resize"] = "letterbox"
    try:
        config = public_config(set(public), input_size or (512, 512))
        state = convert_state_dict(public, config)
    except PublicLayoutError as error:
        raise ConversionError(f"{source}: {error}") from None
    model = BENet(config)
    model.load_state_dict(state)
    try:
        settings = InferenceSettings.for_model(
            config, **path,
            **({"emotion_thresholds": thresholds} if thresholds is not None else {}))
    except (ValueError, TypeError) as error:
        raise ConversionError(f"thresholds do not fit the model: {error}") from None
    meta = {"trained": True, "converted_from": str(source),
            "source_format": "BENet public state dict (ACIVS 2023)",
            "heco": "heco" in config.categories}
    save_model_file(out, model.eval(), settings, meta)
    return model


def _input_size(text: str) -> tuple[int, int]:
    try:  # multiples of 64: the public model's test sizes
        return parse_input_size(text, 64)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m caer_ros.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["benet"], help="what the source is (BENet's release)")
    parser.add_argument("source", type=Path, metavar="SRC", help="a .pth.tar of the archive")
    parser.add_argument("--out", type=Path, required=True, metavar="DST.pt",
                        help="model file to write")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help="flip test: the image and its mirror, averaged (default on, as the "
                             "public code tests; off halves the network time)")
    parser.add_argument("--input-size", type=_input_size, default=None,
                        help="letterbox every frame into this fixed network input, S or HxW, "
                             "multiples of 64 (default: the public path, short side 512 and "
                             "the long side following the frame's aspect ratio)")
    parser.add_argument("--thresholds-from", type=Path, metavar="FILE",
                        help="per-category thresholds: a model file or a JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        thresholds = read_thresholds(args.thresholds_from) if args.thresholds_from else None
        if args.out.is_dir():
            raise ConversionError(f"{args.out}: is a directory; give the model file to write")
        if not args.out.parent.is_dir():
            raise ConversionError(f"{args.out.parent}: no such directory")
        model = convert_benet(args.source, args.out, flip_test=args.flip_test,
                              input_size=args.input_size, thresholds=thresholds)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    sets = ", ".join(f"{name} ({len(names)})" for name, names in model.config.categories.items())
    size = "short side 512, long side a multiple of 64" if args.input_size is None else \
        f"{args.input_size[0]}x{args.input_size[1]} (letterbox)"
    print(f"wrote {args.out}: BENet, {parameter_counts(model).total / 1e6:.2f} M parameters, "
          f"categories {sets}, input {size}, flip test {'on' if args.flip_test else 'off'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
