"""``caer-infer``: people and their emotions in image files, videos and cameras, without ROS.

    caer-infer PATH... --model M.pt|M.onnx [--out DIR] [--backend torch|onnxruntime]
               [--device cpu|cuda] [--providers P,P] [--fp16] [--threshold T] [--max-people N]
               [--fusion none|mean] [--category-set NAME] [--every N] [--max-fps F]
               [--smoothing S] [--no-tracking] [--coco-out FILE.json]
    caer-infer --camera N --model M [--out DIR] [--show] ...

Videos and cameras: :mod:`caer_ros.inference.video`. ``--coco-out``: the people of every image
and processed frame as pre-labels in one COCO file (:mod:`caer_ros.inference.coco_out`), for
CVAT ("COCO 1.0") and ``training/datasets/coco.py``.

The JSON fields and the files written are described in :data:`DESCRIPTION` (the ``--help``
text). The console entry point is ``caer-infer = caer_ros.inference.cli:main``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from caer_ros import BACKENDS, image_file
from caer_ros.image_file import ImageFileError
from caer_ros.inference.coco_out import CocoOutError, CocoWriter
from caer_ros.inference.decode import Detections
from caer_ros.inference.overlay import draw_detections
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import FrameSizeError
from caer_ros.inference.results import people_json
from caer_ros.inference.setting_args import add_setting_arguments, setting_changes
from caer_ros.inference.video import VideoOptions, is_video, run_source
from caer_ros.model.checkpoint import ModelFileError
from caer_ros.model.inference_settings import FUSIONS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
PROGRESS_FROM = 5  # show a progress bar from this many images on

DESCRIPTION = """\
People and their emotions in image files, videos and cameras, with a caer_ros model (.pt or
.onnx).

Each PATH is an image file, a video file (any container and codec OpenCV's FFmpeg reads: .mp4,
.mkv, .avi, .mov, .webm, ...) or a directory (its images, not recursive). Per image, one JSON
object: "file", "image_size" {width, height}, "model", "backend", "category_set", and
"people" (highest detection score first), each with "box" [x1, y1, x2, y2] in image pixels,
"detection_score", "scores" {category: score}, "labels" (the categories at or above their
threshold, highest first) and "valence", "arousal", "dominance" (0..1; null when the model
has no continuous head).

Without --out the objects go to stdout, one per line (JSON Lines), and nothing is drawn.
With --out DIR: DIR/<name>.json and an overlay DIR/<name>.png (boxes, detection scores, top
labels) per image. An image that cannot be read is reported on stderr with its name and the
others are still processed; the exit status is then 1 (2 for a bad model or arguments).

Videos and --camera N (a V4L2 device, until Ctrl-C): people are tracked and their scores
smoothed as emotion_node does. Per processed frame one JSON line: "source", "frame" (index in
the video, from 0), "time_s" (time in the video; since start for a camera) and "people", each
as above plus "id" (the track id; left out with --no-tracking), scores smoothed. With --out DIR:
DIR/<name>.jsonl and DIR/<name>.mp4 (the processed frames annotated with boxes, ids and top
labels, as the node's overlay); without it the lines go to stdout. <name> is the video's
stem or camera<N>. --every N and --max-fps F thin out the frames. Ctrl-C stops cleanly: the
files keep every frame processed so far (exit status 130). A file that is not a video, or a
video that ends before its frame count, is reported with its name (exit status 1); the frames
processed are kept.

--coco-out FILE.json: also every image's and processed frame's people in one COCO file, as
pre-labels to correct in an annotation tool (CVAT: import as "COCO 1.0") and to train on
(training/datasets/coco.py reads it). "images": "id", "file_name" (an image's path relative to
FILE.json's folder; a video's or camera's processed frames are written as JPEG files to
<FILE stem>_frames/<name>_<frame index, 6 digits>.jpg beside FILE.json), "width", "height".
"annotations": one per person, "bbox" [x, y, w, h] in pixels, "category_id" 1 (person),
"attributes" with "occluded" false, "rotation" 0.0 and one true/false per category of the
reported set (true for the person's "labels"), "track_id" for a tracked person; beside them
"score" (detection score) and "emotion_scores". "info" names the model and category set.
The file is written when the run ends: after Ctrl-C with what was processed, and without the
inputs that failed.
"""


INTERRUPTED = 130  # exit status after Ctrl-C, as a shell gives


class ImageError(Exception):
    """An input image that cannot be used; the message says why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="caer-infer", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="image files, video files or directories")
    parser.add_argument("--camera", type=int, metavar="N",
                        help="read the V4L2 camera /dev/videoN until Ctrl-C")
    parser.add_argument("--model", required=True,
                        help="model file: .pt (torch) or .onnx (ONNX Runtime)")
    parser.add_argument("--out", metavar="DIR",
                        help="write <name>.json and the overlay <name>.png here (default: JSON "
                             "Lines on stdout, no overlays)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="default: from the model file's suffix")
    parser.add_argument("--device", default="cpu",
                        help="torch device, or for onnxruntime the default providers: cpu "
                             "(default) or cuda")
    parser.add_argument("--providers", type=lambda text: [p for p in text.split(",") if p],
                        help="ONNX Runtime providers in order of preference, comma-separated "
                             "(e.g. TensorrtExecutionProvider,CUDAExecutionProvider,"
                             "CPUExecutionProvider)")
    parser.add_argument("--fp16", action="store_true",
                        help="half precision (torch on CUDA, or ONNX Runtime's TensorRT)")
    parser.add_argument("--threshold", type=float,
                        help="detection threshold (default: the model's)")
    parser.add_argument("--max-people", type=int, help="at most this many people per image")
    parser.add_argument("--category-set", metavar="NAME",
                        help="report this category set of the model (e.g. heco of an EMOTIC + "
                             "HECO model; default: its first)")
    parser.add_argument("--fusion", choices=FUSIONS,
                        help="mean: each person's scores are the mean of the bottom-up and the "
                             "person-centric head (on a crop of the person), BENet Table 4; "
                             "needs a person-centric head, and for an ONNX file an export with "
                             "--fusion mean (default: the model's setting)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos and cameras: process every N-th frame (default 1: all)")
    parser.add_argument("--max-fps", type=float, metavar="F",
                        help="videos and cameras: at most F frames per second (of video time)")
    parser.add_argument("--smoothing", type=float, default=0.0, metavar="S",
                        help="videos and cameras: exponential smoothing of a tracked person's "
                             "scores, 0 <= S < 1, as the node's parameter (default 0: off)")
    parser.add_argument("--no-tracking", action="store_true",
                        help="videos and cameras: no track ids, raw scores")
    parser.add_argument("--coco-out", metavar="FILE.json",
                        help="also write the people found as COCO pre-labels (CVAT's COCO "
                             "1.0); a video's processed frames go to <FILE stem>_frames/ "
                             "beside it")
    parser.add_argument("--show", action="store_true",
                        help="videos and cameras: show the annotated frames in a window (needs "
                             "a display and OpenCV with GUI support)")
    add_setting_arguments(parser, "; an ONNX file fixes it at export")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the backend set-up")
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.max_people is not None and args.max_people < 0:
        parser.error(f"--max-people must be >= 0, got {args.max_people}")
    if not args.paths and args.camera is None:
        parser.error("give image or video paths, or --camera N")
    if args.camera is not None and args.camera < 0:
        parser.error(f"--camera must be a device number >= 0, got {args.camera}")
    if args.every < 1:
        parser.error(f"--every must be >= 1, got {args.every}")
    if args.max_fps is not None and not (math.isfinite(args.max_fps) and args.max_fps > 0):
        parser.error(f"--max-fps must be > 0, got {args.max_fps}")
    if not 0.0 <= args.smoothing < 1.0:
        parser.error(f"--smoothing must be in [0, 1), got {args.smoothing}")
    if args.coco_out is not None and (not Path(args.coco_out).name
                                      or Path(args.coco_out).is_dir()):
        parser.error(f"--coco-out must name a file (FILE.json), got the folder {args.coco_out}")
    return args


def image_paths(paths: list[str]) -> list[Path]:
    """The files named, and the images inside the directories named (sorted)."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            found.append(path)  # missing or unreadable: reported when it is read
    return found


def read_image(path: Path) -> np.ndarray:
    """(h, w, 3) uint8 BGR; :class:`ImageError` when the file is missing, cut short or not an
    image (:func:`caer_ros.image_file.read_image`)."""
    try:
        return image_file.read_image(path)
    except ImageFileError as error:
        raise ImageError(error.reason) from None


def result_json(path: Path, image: np.ndarray, people: Detections, predictor: Predictor,
                model: str) -> dict[str, Any]:
    """The JSON object of one image (see the module docstring)."""
    return {
        "file": str(path),
        "image_size": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "model": model,
        "backend": predictor.backend,
        "category_set": predictor.category_set,
        "people": people_json(people.boxes, people.detection_scores, people.scores,
                              people.continuous, predictor.categories,
                              predictor.emotion_thresholds,
                              single_label=predictor.single_label),
    }


def _output_names(paths: list[Path]) -> list[str]:
    """A distinct output name per input: its stem, with -2, -3, ... for repeated stems."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        names.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        predictor = Predictor.from_file(args.model, backend=args.backend, device=args.device,
                                        providers=args.providers, fp16=args.fp16,
                                        fusion=args.fusion, changes=setting_changes(args))
        if args.category_set:
            predictor.use_category_set(args.category_set)
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {args.model}: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"error: cannot create {out}: {error.strerror or error}", file=sys.stderr)
            return 2
    coco = None
    if args.coco_out:
        coco = CocoWriter(args.coco_out, args.model, predictor.category_set,
                          predictor.categories)
        try:
            coco.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"error: cannot create {coco.folder}: {error.strerror or error}",
                  file=sys.stderr)
            return 2
    found = image_paths(args.paths)
    videos = [p for p in found if is_video(p)]
    images = [p for p in found if not is_video(p)]
    failed = 0
    try:
        failed = run_images(images, predictor, args, out, coco)
        code = run_videos(videos, predictor, args, out, coco)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = INTERRUPTED
    code = code if code else (1 if failed else 0)
    if coco is not None:
        try:
            coco.write()
        except CocoOutError as error:
            print(f"error: {error}", file=sys.stderr)
            return code or 1
        except KeyboardInterrupt:  # atomic: the file is as it was before the run
            print(f"interrupted: {coco.path} not written", file=sys.stderr)
            return INTERRUPTED
        print(f"COCO pre-labels: {coco.images} images, {coco.people} people -> {coco.path}",
              file=sys.stderr)
    return code


def run_videos(videos: list[Path], predictor: Predictor, args: argparse.Namespace,
               out: Path | None, coco: CocoWriter | None = None) -> int:
    """Every video, then the camera; the exit status (module docstring)."""
    options = VideoOptions(every=args.every, max_fps=args.max_fps, threshold=args.threshold,
                           max_people=args.max_people, tracking=not args.no_tracking,
                           smoothing=args.smoothing, show=args.show)
    sources: list[tuple[Path | int, str]] = list(
        zip(videos, _output_names(videos), strict=True))
    if args.camera is not None:
        sources.append((args.camera, f"camera{args.camera}"))
    status = 0
    for source, name in sources:
        result = run_source(source, predictor, options, out, name, progress=True, coco=coco)
        if result.problem:
            print(f"error: {result.source}: {result.problem}", file=sys.stderr)
            status = max(status, 1)
        kept = ", ".join(str(p) for p in result.files)
        print(f"{result.source}: {result.processed} of {result.read} frames processed"
              + (f" -> {kept}" if kept else ""), file=sys.stderr)
        if result.interrupted:
            print(f"interrupted: the files keep the {result.processed} frames processed",
                  file=sys.stderr)
            return INTERRUPTED
    return status


def run_images(paths: list[Path], predictor: Predictor, args: argparse.Namespace,
               out: Path | None, coco: CocoWriter | None = None) -> int:
    """Every image (module docstring); the number that failed. ``coco``: add each image
    read and its people to these pre-labels."""
    failed = 0
    bar = tqdm(list(zip(paths, _output_names(paths), strict=True)), unit="image",
               file=sys.stderr, disable=len(paths) < PROGRESS_FROM)
    for path, name in bar:
        try:
            image = read_image(path)
            people = predictor.predict(image, detection_threshold=args.threshold,
                                       max_people=args.max_people)
            result = result_json(path, image, people, predictor, args.model)
            if out is None:
                tqdm.write(json.dumps(result), file=sys.stdout)
            else:
                drawn = draw_detections(image, people, predictor.categories,
                                        predictor.emotion_thresholds,
                                        single_label=predictor.single_label)
                (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
                if not cv2.imwrite(str(out / f"{name}.png"), drawn):
                    raise ImageError(f"cannot write {out / f'{name}.png'}")
                tqdm.write(f"{path}: {len(people)} people -> {out / name}.json, .png",
                           file=sys.stdout)
            if coco is not None:  # once its outputs are written: a failed image is left out
                coco.add_image(path, image.shape[1], image.shape[0], result["people"])
        except (ImageError, FrameSizeError) as error:
            failed += 1
            tqdm.write(f"error: {path}: {error}", file=sys.stderr)
        except OSError as error:
            failed += 1
            tqdm.write(f"error: {path}: {error.strerror or error}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(paths)} image(s) failed", file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
