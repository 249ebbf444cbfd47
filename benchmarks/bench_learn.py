"""Learnability benchmark: does BENet learn CAER from scratch on 2 CPU cores? (issue 5)

One run, three arms, the same training budget each (``--budget-minutes``, training time as
the trainer counts it; validation and evaluation come on top):

1. data: a synthetic CAER set (:mod:`training.datasets.synthetic`, EMOTIC on-disk format,
   train / val / test 70/15/15) whose labels need the face, the body pose *and* the scene
   context, and two masked copies of it (train, val and test alike);
2. ``full``: the bench config (``training/configs/bench_learn.yaml``, the ``hrnet_cpu``
   backbone) trained on the images as they are; its ``final.pt`` (``--checkpoint best`` for
   the lowest validation loss instead) is evaluated on the held-out test split with
   :func:`training.evaluation.evaluate.evaluate`, the node's
   :class:`~caer_ros.inference.predictor.Predictor`
   code path: ``er_map``, ``pd_ap``, ``oer_map`` (x100; targets >= 70, >= 50, >= 50);
3. ``context_only``: every person's box filled with the letterbox pad colour (:data:`PAD_RGB`),
   only the scene is left -> ``er_map_context_only``;
4. ``person_only``: only the people, their stick figures redrawn from the generator's ground
   truth on a plain pad-colour canvas -> ``er_map_person_only``. (Filling only what lies
   outside the boxes would leave a third of each box showing the scene, enough to read the
   context; that variant is the optional arm ``person_box_only``.)

Both masked arms must stay below the full model's ER mAP: the labels need the person and the
context together. The figures also give each arm's ratio to the full one.

Model file. The evaluated file is the trainer's own ``final.pt`` (or ``best.pt``), trained with
``inference.extraction`` set from ``--extraction`` (default ``center``: BENet's losses train the
emotion maps at the people's centres only, BENet 2.1, 3.4, so they are read there). The full
arm's model file is loaded with ``Predictor.from_file`` (as the node and ``caer-infer`` do)
and run on a test image.

Usage::

    python benchmarks/bench_learn.py [--json PATH] [--budget-minutes 8] [--out DIR] [--seed 0]
        [--images 1400] [--size 128] [--config training/configs/bench_learn.yaml]
        [--arms full,context_only,person_only] [--threads N] [--quick] [key=value ...]

``key=value`` are training-config overrides applied to every arm (``optim.lr=2e-3``).
``--quick`` is a smoke run (30 images, 3 s of training per arm, one thread): it checks the
whole path, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from common import machine, rounded, write_json

from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import PAD_RGB
from training.config import load_config
from training.datasets.emotic import ANNOTATIONS, load_emotic
from training.datasets.synthetic import FOLDER, SceneTruth, draw_person, generate
from training.evaluation.evaluate import evaluate
from training.train import Trainer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "training" / "configs" / "bench_learn.yaml"
# Arm -> what its images keep (:func:`masked_image`); ``person_box_only`` (the people's boxes,
# scene pixels inside them included) is not run by default.
ARMS = {"full": "everything", "context_only": "context", "person_only": "person",
        "person_box_only": "person_box"}
DEFAULT_ARMS = ("full", "context_only", "person_only")
TARGETS = {"er_map": 70.0, "pd_ap": 50.0, "oer_map": 50.0}


# --------------------------------------------------------------------------- data


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) bool: the pixels any box touches (columns ``floor(x1) .. ceil(x2) - 1``, rows
    likewise, clipped), the rule of the training pre-transforms, so a box is masked whole."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, c1 = max(0, math.floor(x1)), min(width, math.ceil(x2))
        r0, r1 = max(0, math.floor(y1)), min(height, math.ceil(y2))
        mask[r0:r1, c0:c1] = True
    return mask


def figure_scale() -> float:
    """Box height of a stick figure of scale 1 (the generator's own drawing, measured)."""
    _, top, _, bottom = draw_person(np.zeros((1, 1, 3), np.uint8), 0.0, 0.0, 1.0, "smile", "up",
                                    (0, 0, 0))
    return bottom - top


def people_alone(scene: SceneTruth, image: np.ndarray, fill_bgr: np.ndarray) -> np.ndarray:
    """The scene's stick figures redrawn on a plain ``fill_bgr`` canvas, from the generator's
    ground truth (box -> centre, top and scale; face; pose) and each shirt colour read back
    from ``image`` (median of the lower torso, where no arm passes): the people exactly as
    drawn, their anti-aliased edges blended with the fill instead of the scene."""
    canvas = np.empty_like(image)
    canvas[:] = fill_bgr
    unit = figure_scale()
    for person in scene.people:
        x1, y1, x2, y2 = person.box
        scale, centre = (y2 - y1) / unit, (x1 + x2) / 2
        rows = slice(int(round(y1 + 1.3 * scale)), int(round(y1 + 1.55 * scale)) + 1)
        cols = slice(int(round(centre - 0.2 * scale)), int(round(centre + 0.2 * scale)) + 1)
        shirt = np.median(image[rows, cols].reshape(-1, 3), axis=0)
        draw_person(canvas, centre, y1, scale, person.face, person.pose,
                    tuple(int(c) for c in shirt))
    return canvas


def masked_image(keep: str, scene: SceneTruth, image: np.ndarray) -> np.ndarray:
    """``image`` with only what an arm keeps (:data:`ARMS`), the rest in the pad colour."""
    fill_bgr = np.array(PAD_RGB[::-1], dtype=np.uint8)
    if keep == "person":
        return people_alone(scene, image, fill_bgr)
    boxes = np.array([p.box for p in scene.people], dtype=np.float64).reshape(-1, 4)
    inside = box_mask(boxes, scene.height, scene.width)
    out = image.copy()
    out[inside if keep == "context" else ~inside] = fill_bgr
    return out


def masked_copy(source: Path, target: Path, truth: dict[str, list[SceneTruth]],
                keep: str) -> None:
    """Copy the synthetic set ``source`` to ``target`` with every image masked
    (:func:`masked_image`); the annotations are copied unchanged."""
    (target / ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / ANNOTATIONS, target / ANNOTATIONS)
    (target / "emotic" / FOLDER).mkdir(parents=True, exist_ok=True)
    for scene in (s for split in truth.values() for s in split):
        image = cv2.imread(str(source / "emotic" / FOLDER / scene.filename), cv2.IMREAD_COLOR)
        cv2.imwrite(str(target / "emotic" / FOLDER / scene.filename),
                    masked_image(keep, scene, image), [cv2.IMWRITE_JPEG_QUALITY, 95])


def make_data(out: Path, images: int, seed: int, size: int, arms: list[str]) -> dict[str, Path]:
    """The synthetic set and the masked copies the arms need: arm name -> data folder."""
    roots = {arm: out / "data" / arm for arm in ("full", *arms)}
    for root in roots.values():
        if root.exists():
            shutil.rmtree(root)
    truth = generate(roots["full"], images, seed, size)
    for arm in arms:
        if arm != "full":
            masked_copy(roots["full"], roots[arm], truth, ARMS[arm])
    return roots


# --------------------------------------------------------------------------- arms


def run_arm(name: str, data: Path, args: argparse.Namespace) -> dict[str, object]:
    """Train one arm within the budget; evaluate its model file on the test split."""
    out = args.out / "runs" / name
    config = load_config(args.config, [*args.overrides, f"out={out}", f"seed={args.seed}",
                                       f"budget_minutes={json.dumps(args.budget_minutes)}",
                                       f"inference.extraction={args.extraction}"], data)
    limit = f"{config.max_steps} steps" if config.budget_minutes is None else \
        f"budget {config.budget_minutes:g} min"
    print(f"[{name}] training on {data.name}: {limit} -> {out}", flush=True)
    started = time.perf_counter()
    trainer = Trainer(config, restart=True, progress=args.progress)
    history = trainer.run()
    train_wall = time.perf_counter() - started
    state = trainer.state
    model = out / f"{args.checkpoint}.pt"
    print(f"[{name}] {state.global_step} steps in {state.elapsed_s:.0f} s of training; "
          f"evaluating {model} on the test split", flush=True)
    started = time.perf_counter()
    records, _ = load_emotic(data, "test")
    result = evaluate(Predictor.from_file(model), records, progress=args.progress)
    last = history[-1] if history else {}
    steps_per_epoch = max(1, len(trainer.train_set) // config.batch_size)
    return {
        "er_map": round(result.er_map, 2),
        "pd_ap": round(result.pd_ap, 2),
        "oer_map": round(result.oer_map, 2),
        "per_category_ap": {k: round(v, 2) for k, v in result.per_category_ap.items()
                            if math.isfinite(v)},
        "oer_per_threshold": {k: round(v, 2) for k, v in result.oer_per_threshold.items()},
        "model": str(model),
        "data": str(data),
        "test_images": result.images,
        "test_people": result.people,
        "train_s": round(state.elapsed_s, 1),
        "steps": state.global_step,
        "samples": state.global_step * config.batch_size,
        "epochs": round(state.global_step / steps_per_epoch, 2),
        "s_per_step": round(state.elapsed_s / max(1, state.global_step), 3),
        "stopped_by_budget": state.epoch < config.epochs,
        "train_wall_s": round(train_wall, 1),
        "eval_s": round(time.perf_counter() - started, 1),
        "last_train_loss": rounded(last.get("train", {}).get("total"), 4),
        "last_val_loss": rounded(last.get("val", {}).get("total"), 4),
        # KA runs: eq. 7's loss over its value for zero student features
        # (training.objectives.amalgamation)
        "collapse_ratio": rounded(last.get("collapse_ratio"), 4),
        "validations": validations(history),
        "config": config.to_dict(),
    }


def validations(history: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each validation of a run: the steps and training seconds before it, its total loss and
    its emotion tasks' metrics (``val_metrics``, 0..1)."""
    out, steps = [], 0
    for record in history:
        steps += record["steps"]
        if "val" in record:
            out.append({"steps": steps, "elapsed_s": record["elapsed_s"],
                        "val_loss": rounded(record["val"].get("total"), 4),
                        "val_metrics": record.get("val_metrics", {})})
    return out


def check_model(model: Path, data: Path) -> dict[str, object]:
    """Load the full model as the node and ``caer-infer`` do and run it on a test image."""
    records, _ = load_emotic(data, "test")
    record = max(records, key=lambda r: len(r.people))
    predictor = Predictor.from_file(model)
    people = predictor.predict(cv2.imread(str(record.path), cv2.IMREAD_COLOR))
    return {"loads": True, "backend": predictor.backend, "image": str(record.path),
            "annotated_people": len(record.people), "detected_people": len(people),
            "categories": len(predictor.categories), "input_size": list(predictor.input_size),
            "extraction": predictor.settings.extraction}


# --------------------------------------------------------------------------- report


def summary(arms: dict[str, dict[str, object]]) -> dict[str, object]:
    """The headline figures, the masked arms against the full one, and the targets met."""
    full = arms.get("full", {})
    out: dict[str, object] = {k: full.get(k) for k in TARGETS}
    met = {k: full.get(k) is not None and full[k] >= t for k, t in TARGETS.items()}
    for arm in arms:
        if arm == "full":
            continue
        value = arms[arm]["er_map"]
        out[f"er_map_{arm}"] = value
        if full:
            out[f"{arm}_below_full"] = value < full["er_map"]
            out[f"{arm}_ratio"] = round(value / full["er_map"], 3) if full["er_map"] else None
            met[f"er_map_{arm}"] = value < full["er_map"]
    out["targets_met"] = met
    out["all_targets_met"] = bool(met) and all(met.values())
    return out


def table(figures: dict[str, object]) -> str:
    """The figures against their targets, then the training time of each arm."""
    met = figures["targets_met"]
    rows = [("figure", "measured", "target", "met")]
    for key, target in figures["targets"].items():
        if figures.get(key) is not None:
            rows.append((key, f"{figures[key]:.1f}", target, "yes" if met.get(key) else "NO"))
    rows += [("", "", "", ""), ("arm", "ER / PD / OER", "train s / steps", "s per step")]
    for name, arm in figures["arms"].items():
        rows.append((name, f"{arm['er_map']:.1f} / {arm['pd_ap']:.1f} / {arm['oer_map']:.1f}",
                     f"{arm['train_s']:.0f} / {arm['steps']}", f"{arm['s_per_step']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="training time per arm, minutes (default 8)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_learn",
                        help="folder for the data, the run folders and the model files "
                             "(default runs/bench_learn; its data/ and runs/ are replaced)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--images", type=int, default=1400, help="synthetic images in all")
    parser.add_argument("--size", type=int, default=128, help="synthetic image side, pixels")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"comma-separated arms (default {','.join(DEFAULT_ARMS)}; also "
                             f"person_box_only: everything outside the boxes masked)")
    parser.add_argument("--checkpoint", choices=("final", "best"), default="final",
                        help="the trainer's model file evaluated (default final)")
    parser.add_argument("--extraction", choices=("center", "box_mean"), default="center",
                        help="how the evaluated model file reads the emotion maps")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's, one per core; on a machine "
                             "shared with other jobs 1 can be several times faster)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 30 images, ~10 s of training per arm (figures "
                             "meaningless)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="training-config overrides for every arm, e.g. optim.lr=2e-3")
    args = parser.parse_args(argv)
    args.arms = list(dict.fromkeys(a for a in args.arms.split(",") if a))
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown or not args.arms:
        parser.error(f"--arms: unknown {unknown}; known: {','.join(ARMS)}")
    if args.quick:  # one thread: a smoke run next to other jobs stays fast (see --threads)
        args.images, args.budget_minutes = 30, 0.05
        args.threads = args.threads or 1
        args.overrides = ["batch_size=4", "val_every=1000", "calibrate=false", *args.overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"[data] {args.images} synthetic images of {args.size} px -> {args.out / 'data'}",
          flush=True)
    roots = make_data(args.out, args.images, args.seed, args.size, args.arms)
    arms = {arm: run_arm(arm, roots[arm], args) for arm in args.arms}
    figures: dict[str, object] = {
        "machine": machine(), "command": " ".join(sys.argv), "quick": args.quick,
        "seed": args.seed, "budget_minutes": args.budget_minutes,
        "checkpoint": args.checkpoint, "extraction": args.extraction,
        "config_file": str(args.config), "overrides": list(args.overrides),
        "config": next(iter(arms.values()))["config"],
        "data": {"images": args.images, "size": args.size,
                 "roots": {k: str(v) for k, v in roots.items()}},
        "arms": {name: {k: v for k, v in arm.items() if k != "config"}
                 for name, arm in arms.items()},
    }
    if "full" in arms:
        figures["model_file"] = arms["full"]["model"]
        figures["model_check"] = check = check_model(Path(arms["full"]["model"]), roots["full"])
        print(f"[model] {figures['model_file']} loads with Predictor.from_file: "
              f"{check['detected_people']} people found on a test image with "
              f"{check['annotated_people']} annotated", flush=True)
    figures.update(summary(arms))
    figures["targets"] = {**{k: f">= {v:g}" for k, v in TARGETS.items()},
                          **{f"er_map_{arm}": "< er_map" for arm in args.arms if arm != "full"}}
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
