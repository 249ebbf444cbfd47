"""Learnability benchmark: does BENet learn CAER from scratch on 2 CPU cores? (issue 5)

One run, three arms, the same training budget each (``--budget-minutes``, training time as
the trainer counts it; validation and evaluation come on top):

1. data: a synthetic CAER set (:mod:`training.datasets.synthetic`, EMOTIC on-disk format,
   train / val / test 70/15/15) whose labels need the face, the body pose *and* the scene
   context, and two masked copies of it (train, val and test alike;
   :func:`training.datasets.synthetic_variants.make_variants`);
2. ``full``: the bench config (``training/configs/bench_learn.yaml``, the ``hrnet_cpu``
   backbone) trained on the images as they are; its ``final.pt`` (``--checkpoint best`` for
   the lowest validation loss instead) is evaluated on the held-out test split with
   :func:`training.evaluation.evaluate.evaluate`, the node's
   :class:`~caer_ros.inference.predictor.Predictor`
   code path: ``er_map``, ``pd_ap``, ``oer_map`` (x100; targets >= 70, >= 50, >= 50);
3. ``context_only``: every person's box filled with the letterbox pad colour (``PAD_RGB``),
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
import sys
import time
from pathlib import Path

import common
from common import format_table, machine

from training.datasets.synthetic_variants import make_variants
from training.experiments import ArmSetup, arm_run, check_model

DEFAULT_CONFIG = common.CONFIGS / "bench_learn.yaml"
# Arm -> what its images keep (:func:`training.datasets.synthetic_variants.masked_image`);
# ``person_box_only`` (the people's boxes, scene pixels inside them included) is not run by
# default.
ARMS = {"full": "everything", "context_only": "context", "person_only": "person",
        "person_box_only": "person_box"}
DEFAULT_ARMS = ("full", "context_only", "person_only")
TARGETS = {"er_map": 70.0, "pd_ap": 50.0, "oer_map": 50.0}


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
    return format_table(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.benchmark_parser(__doc__)
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="training time per arm, minutes (default 8)")
    parser.add_argument("--out", type=Path, default=common.REPO / "runs" / "bench_learn",
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
    common.add_run_options(parser, "smoke run: 30 images, ~10 s of training per arm (figures "
                                   "meaningless)", progress=True)
    args = parser.parse_args(argv)
    args.arms = common.arm_list(parser, args.arms, tuple(ARMS))
    if args.quick:  # one thread: a smoke run next to other jobs stays fast (see --threads)
        args.images, args.budget_minutes = 30, 0.05
        args.threads = args.threads or 1
        args.overrides = ["batch_size=4", "val_every=1000", "calibrate=false", *args.overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_threads(args.threads)
    started = time.perf_counter()
    print(f"[data] {args.images} synthetic images of {args.size} px -> {args.out / 'data'}",
          flush=True)
    roots = make_variants(args.out / "data", args.images, args.seed, args.size,
                          {arm: ARMS[arm] for arm in args.arms if arm != "full"})
    setup = ArmSetup(args.config, tuple(args.overrides), args.seed, args.budget_minutes,
                     args.extraction, args.checkpoint, args.progress)
    arms = {arm: arm_run(arm, roots[arm], args.out / "runs" / arm, setup) for arm in args.arms}
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
    return common.finish(args.json, figures, started, table)


if __name__ == "__main__":
    sys.exit(main())
