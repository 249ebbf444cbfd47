"""Fine-tuning benchmark: does a lab's own small set gain from a model trained on EMOTIC? (issue 28)

A lab fine-tunes a model file on its own data (a COCO folder, ``data.emotions`` its own
emotion names, ``init_from=MODEL.pt``: ``training/configs/finetune_coco.yaml``) instead of
training from scratch. Here on synthetic scenes, on 2 CPU cores:

1. **Pretraining data**: a synthetic EMOTIC set (:func:`training.datasets.synthetic.generate`,
   ``--pretrain-images`` scenes of ``--size`` px, train / val / test 70/15/15) and its
   shuffled-label copy (:func:`training.experiments.shuffled_label_copy`: the people's labels
   permuted across the people of train and of val, boxes and images kept; test as it is).
2. **Bases**: ``base``, the learnability benchmark's config (``training/configs/bench_learn.yaml``,
   ``hrnet_cpu``, 128 px, centre extraction as ``bench_learn.py`` trains it) for
   ``--pretrain-steps`` steps on the real set; ``placebo_base``, the same (same seed, steps,
   config) on the shuffled copy. Both ``final.pt`` (the same number of pretraining steps; a
   best.pt picked on shuffled validation labels would be another amount of pretraining).
3. **Own data**: a lab-sized COCO folder (:func:`training.datasets.synthetic_coco.generate_coco`,
   ``--own-images`` scenes, train / val 85/15, the ``emotions`` spelling) labelled with the
   lab's own set :data:`~training.datasets.synthetic_coco.OWN_EMOTIONS` (Happiness, Sadness,
   Surprise by EMOTIC's rules, Calm new), and ``--test-images`` held-out test scenes from a
   random stream of their own (split by image: no test image is trained or validated on).
4. **Arms**, each for exactly ``--steps`` optimiser steps (``max_steps``) and each training
   seed of ``--seeds`` (initialisation of what is not loaded, batch order, augmentation; the
   data and the bases are the same for every seed), the fine-tuning config with the base's
   architecture and inference settings (:func:`training.experiments.same_start`, so the
   configs differ only as listed), ``best_by: metric`` (``best.pt``: the highest validation
   ER mAP on the own set's val split), ``workers: 0``:

   - ``finetune``: ``init_from`` the base's ``final.pt`` (heads alone for the config's
     ``freeze_backbone_steps``, then everything);
   - ``scratch``: no ``init_from``, ``freeze_backbone_steps: 0`` (freezing a random
     backbone would only handicap it);
   - ``placebo``: as ``finetune``, ``init_from`` the placebo base: what generic/detection
     pretraining on the same images gives without the emotion knowledge;
   - ``scratch_lr``: as ``scratch`` at the base's learning rate (bench_learn's 4e-3, tuned for
     training from scratch; the fine-tuning config's 5e-4 is not): the gain against the
     better-tuned control.

   Each arm's ``best.pt`` (and, beside it, ``final.pt``) is evaluated on the own test split
   with :func:`training.evaluation.evaluate.evaluate`, the node's predictor: ``er_map``,
   ``pd_ap`` (x100), each category's AP.

Ingredient checks, before any arm is read: the base's and the placebo base's ER mAP and PD AP
on the (real) EMOTIC test split beside the ER mAP of constant scores there (the base must have
learnt: at least chance + 20; the placebo base near chance: at most chance + 5), the share of
people whose labels the shuffle changed, what ``init_from`` loads of each base
(:func:`training.experiments.init_check`: the three shared emotions from EMOTIC's, Calm new),
equal steps in every arm. ``checks_passed`` says whether all hold.

Figures (x100; mean over seeds, ``*_std`` the sample standard deviation; gains paired: the same
seed's runs subtracted, then mean and spread): ``finetune_gain`` (finetune - scratch ER mAP,
also per seed), ``placebo_gain`` (placebo - scratch), ``finetune_minus_placebo``,
``finetune_gain_vs_scratch_lr``, ``finetune_gain_final`` (the same with ``final.pt``), every
arm's ER mAP, PD AP, steps and training seconds. Target (issue 28): ``finetune_gain`` at least
5 points, met only when ``finetune_gain - finetune_gain_std >= 5``.

Usage::

    python benchmarks/bench_finetune.py [--json PATH] [--steps 300] [--seeds 0,1,2]
        [--pretrain-steps 1000] [--pretrain-images 600] [--own-images 100]
        [--test-images 100] [--size 128] [--data-seed 0] [--out DIR]
        [--arms finetune,scratch,placebo,scratch_lr] [--threads N] [--progress] [--quick]
        [key=value ...]

Two bases of 1000 steps and 4 arms x 3 seeds of 300 steps take about 35 minutes on 2 idle
cores (a base step about 0.4 s, an arm step about 0.25 s; validations, calibration and the
evaluations add about a tenth).

``key=value`` are training-config overrides of every arm (not the bases). ``--quick`` is a
smoke run (64 px, a few images, 3 steps per base and arm, one seed, one thread): it checks
the whole path, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import common
from common import format_table, machine, mean_std, paired, write_json

from training.config import OWN_SET
from training.datasets.coco import EmotionSet
from training.datasets.synthetic import generate
from training.datasets.synthetic_coco import OWN_EMOTIONS, generate_coco
from training.experiments import (
    chance_er_map,
    changed_fraction,
    init_check,
    model_figures,
    same_start,
    shuffled_label_copy,
    split_records,
    train_run,
)

BASE_CONFIG = common.CONFIGS / "bench_learn.yaml"
ARM_CONFIG = common.CONFIGS / "finetune_coco.yaml"
ARMS = ("finetune", "scratch", "placebo", "scratch_lr")
TARGET_GAIN = 5.0  # finetune_gain: mean - std at least this (issue 28)
BASE_MARGIN = 20.0  # the base has learnt: ER mAP at least chance + this
PLACEBO_MARGIN = 5.0  # the placebo base is near chance: ER mAP at most chance + this


# --------------------------------------------------------------------------- parts


def make_data(args: argparse.Namespace) -> dict[str, object]:
    """The pretraining set, its shuffled-label copy and the own COCO folder."""
    data = args.out / "data"
    if data.exists():
        shutil.rmtree(data)
    roots = {"pretrain": data / "pretrain", "shuffled": data / "pretrain_shuffled",
             "own": data / "own"}
    print(f"[data] {args.pretrain_images} pretraining scenes, their shuffled-label copy, "
          f"{args.own_images} own scenes + {args.test_images} own test scenes "
          f"({args.size} px) -> {data}", flush=True)
    truth = generate(roots["pretrain"], args.pretrain_images, args.data_seed, args.size)
    shuffled = shuffled_label_copy(roots["pretrain"], roots["shuffled"], truth, args.data_seed)
    own = generate_coco(roots["own"], args.own_images, args.data_seed, args.size,
                        test_images=args.test_images)
    return {"roots": roots, "changed": changed_fraction(truth, shuffled),
            "own_splits": {k: len(v) for k, v in own.items()},
            "pretrain_splits": {k: len(v) for k, v in truth.items()}}


def train_bases(roots: dict[str, Path], args: argparse.Namespace) -> dict[str, object]:
    """``base`` and ``placebo_base`` (module docstring, 2) and their figures on the real
    EMOTIC test split."""
    records = split_records(roots["pretrain"], "emotic", "test")
    bases: dict[str, object] = {"chance_er_map": chance_er_map(records)}
    overrides = [f"max_steps={args.pretrain_steps}", "inference.extraction=center",
                 "calibrate=false", *args.base_overrides]
    for name, root in (("base", roots["pretrain"]), ("placebo_base", roots["shuffled"])):
        print(f"[{name}] {args.pretrain_steps} steps on {root.name} -> "
              f"{args.out / 'runs' / name}", flush=True)
        run = train_run(BASE_CONFIG, root, args.out / "runs" / name, args.data_seed, overrides,
                        args.progress)
        figures = model_figures(run.final, records, args.progress)
        print(f"[{name}] EMOTIC test ER mAP {figures['er_map']} (chance "
              f"{bases['chance_er_map']}), PD AP {figures['pd_ap']}", flush=True)
        bases[name] = {**run.figures(), **figures, "model": str(run.final),
                       "lr": run.config["optim"]["lr"]}
    return bases


def arm_overrides(arm: str, bases: dict[str, object], args: argparse.Namespace) -> list[str]:
    """The arm's config overrides: the base's architecture and inference settings, the own
    emotions, the steps, then what the arm changes (module docstring), then the user's."""
    base = bases["base"]["model"]
    common = [*same_start(base), f"data.emotions={json.dumps(list(OWN_EMOTIONS))}",
              f"max_steps={args.steps}", "best_by=metric", "workers=0"]
    own = {
        "finetune": [f"init_from={json.dumps(base)}"],
        "placebo": [f"init_from={json.dumps(bases['placebo_base']['model'])}"],
        "scratch": ["freeze_backbone_steps=0"],
        "scratch_lr": ["freeze_backbone_steps=0", f"optim.lr={bases['base']['lr']}"],
    }[arm]
    return [*common, *args.arm_base_overrides, *own, *args.overrides]


def run_arm(arm: str, seed: int, bases: dict[str, object], roots: dict[str, Path],
            args: argparse.Namespace) -> dict[str, object]:
    overrides = arm_overrides(arm, bases, args)
    out = args.out / "runs" / f"{arm}_seed{seed}"
    print(f"[{arm} seed {seed}] {args.steps} steps on the own set -> {out}", flush=True)
    run = train_run(ARM_CONFIG, roots["own"], out, seed, overrides, args.progress)
    records = split_records(roots["own"], "coco", "test", EmotionSet(OWN_SET, OWN_EMOTIONS))
    best = model_figures(run.best, records, args.progress)
    final = model_figures(run.final, records, args.progress)
    print(f"[{arm} seed {seed}] own test ER mAP {best['er_map']} (best.pt, step "
          f"{run.best_step}), {final['er_map']} (final.pt); {run.steps} steps in "
          f"{run.train_s:.0f} s", flush=True)
    return {**run.figures(), **best, "er_map_final": final["er_map"],
            "pd_ap_final": final["pd_ap"], "model": str(run.best),
            "arm_overrides": overrides[2:],  # the base's model/inference sections left out
            "config": run.config}


def config_differences(configs: dict[str, dict[str, object]], reference: str = "finetune"
                       ) -> dict[str, list[str]]:
    """Each arm's config keys (dotted) whose values differ from ``reference``'s, the run folder
    left out: what the arms' comparison rests on (module docstring)."""
    def flat(value: object, prefix: str = "") -> dict[str, object]:
        if isinstance(value, dict):
            return {k: v for key, child in value.items()
                    for k, v in flat(child, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    if reference not in configs:
        return {}
    ref = flat(configs[reference])
    out = {}
    for arm, config in configs.items():
        mine = flat(config)
        out[arm] = sorted(k for k in set(ref) | set(mine)
                          if k != "out" and ref.get(k) != mine.get(k))
    return out


# --------------------------------------------------------------------------- report


def gain(runs: dict[str, dict[int, dict[str, object]]], arm: str, control: str,
         key: str = "er_map") -> dict[str, object]:
    if arm not in runs or control not in runs:
        return {}
    mean, spread = paired(runs, arm, key, control)
    per_seed = {str(s): round(runs[arm][s][key] - runs[control][s][key], 2)
                for s in runs[arm] if s in runs[control]
                and runs[arm][s].get(key) is not None and runs[control][s].get(key) is not None}
    return {"mean": mean, "std": spread, "per_seed": per_seed}


def summary(runs: dict[str, dict[int, dict[str, object]]], bases: dict[str, object],
            data: dict[str, object], inits: dict[str, dict[str, object]],
            own_chance: float, args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    headline = {"finetune_gain": ("finetune", "scratch", "er_map"),
                "placebo_gain": ("placebo", "scratch", "er_map"),
                "finetune_minus_placebo": ("finetune", "placebo", "er_map"),
                "finetune_gain_vs_scratch_lr": ("finetune", "scratch_lr", "er_map"),
                "finetune_gain_final": ("finetune", "scratch", "er_map_final"),
                "finetune_gain_pd_ap": ("finetune", "scratch", "pd_ap")}
    for key, (arm, control, figure) in headline.items():
        found = gain(runs, arm, control, figure)
        out[key], out[f"{key}_std"] = found.get("mean"), found.get("std")
        if key == "finetune_gain":
            out["finetune_gain_per_seed"] = found.get("per_seed")
    arms: dict[str, object] = {}
    for arm, by_seed in runs.items():
        entry: dict[str, object] = {}
        for key in ("er_map", "er_map_final", "pd_ap", "train_s", "s_per_step", "wall_s"):
            entry[key], entry[f"{key}_std"] = mean_std([r.get(key) for r in by_seed.values()])
        entry["steps"] = sorted({r["steps"] for r in by_seed.values()})
        categories = {c for r in by_seed.values() for c in r["per_category_ap"]}
        entry["per_category_ap"] = {c: mean_std([r["per_category_ap"].get(c)
                                                 for r in by_seed.values()])[0]
                                    for c in sorted(categories)}
        entry["seeds"] = {str(s): r for s, r in by_seed.items()}
        arms[arm] = entry
    chance = bases["chance_er_map"]
    base, placebo = bases["base"], bases["placebo_base"]
    steps = {r["steps"] for by_seed in runs.values() for r in by_seed.values()}
    checks = {
        "emotic_chance_er_map": chance,
        "base_er_map": base["er_map"], "base_pd_ap": base["pd_ap"],
        "placebo_base_er_map": placebo["er_map"], "placebo_base_pd_ap": placebo["pd_ap"],
        "base_learnt": base["er_map"] is not None and base["er_map"] >= chance + BASE_MARGIN,
        "placebo_base_near_chance": placebo["er_map"] is not None
        and placebo["er_map"] <= chance + PLACEBO_MARGIN,
        "shuffled_people_changed": round(data["changed"], 3),
        "init": inits,
        "init_loads": all(i["loaded"] > 0 for i in inits.values()),
        "equal_steps": steps == {args.steps},
        "own_chance_er_map": own_chance,
    }
    checks["passed"] = all(checks[k] for k in ("base_learnt", "placebo_base_near_chance",
                                               "init_loads", "equal_steps"))
    out["checks"] = checks
    out["checks_passed"] = checks["passed"]
    met = out["finetune_gain"] is not None and out["finetune_gain_std"] is not None \
        and out["finetune_gain"] - out["finetune_gain_std"] >= TARGET_GAIN
    out["targets"] = {"finetune_gain": f"mean - std >= {TARGET_GAIN:g}"}
    out["targets_met"] = {"finetune_gain": met}
    out["arms"] = arms
    return out


def table(figures: dict[str, object]) -> str:
    rows = [("arm", "own ER mAP (best.pt)", "vs scratch", "ER mAP final.pt", "PD AP", "steps",
             "train s", "s/step")]
    runs = {arm: {int(s): r for s, r in entry["seeds"].items()}
            for arm, entry in figures["arms"].items()}
    for arm, entry in figures["arms"].items():
        found = gain(runs, arm, "scratch") if arm != "scratch" else {}

        def pm(key: str, entry: dict[str, object] = entry, digits: int = 1) -> str:
            value, spread = entry.get(key), entry.get(f"{key}_std")
            return "-" if value is None else f"{value:.{digits}f}+-{spread:.{digits}f}"

        versus = "-" if found.get("mean") is None else f"{found['mean']:+.1f}+-{found['std']:.1f}"
        rows.append((arm, pm("er_map"), versus, pm("er_map_final"), pm("pd_ap"),
                     ",".join(map(str, entry["steps"])), pm("train_s"), pm("s_per_step", digits=2)))
    lines = [format_table(rows)]
    checks = figures["checks"]
    lines.append(f"EMOTIC test ER mAP: base {checks['base_er_map']}, placebo base "
                 f"{checks['placebo_base_er_map']}, chance {checks['emotic_chance_er_map']} "
                 f"(PD AP {checks['base_pd_ap']} / {checks['placebo_base_pd_ap']}); own test "
                 f"chance {checks['own_chance_er_map']}")

    def line(key: str) -> str:
        value, spread = figures.get(key), figures.get(f"{key}_std")
        return f"{key} = " + ("-" if value is None else f"{value:+.2f} +- {spread:.2f}")

    for key in ("finetune_gain", "placebo_gain", "finetune_minus_placebo",
                "finetune_gain_vs_scratch_lr"):
        lines.append(line(key))
    met = figures["targets_met"]["finetune_gain"]
    lines.append(f"target finetune_gain mean - std >= {TARGET_GAIN:g}: "
                 f"{'met' if met else 'NOT met'}; ingredient checks "
                 f"{'passed' if figures['checks_passed'] else 'FAILED (do not trust the arms)'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of every arm")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--pretrain-steps", type=int, default=1000,
                        help="optimiser steps of each base")
    parser.add_argument("--pretrain-images", type=int, default=600,
                        help="scenes of the synthetic EMOTIC set (70/15/15)")
    parser.add_argument("--own-images", type=int, default=100,
                        help="scenes of the own set (train / val 85/15)")
    parser.add_argument("--test-images", type=int, default=100,
                        help="held-out own test scenes (a stream of their own)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the data, the shuffle and the bases' training")
    parser.add_argument("--out", type=Path, default=common.REPO / "outputs" / "bench_finetune")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated among {','.join(ARMS)} (scratch always runs)")
    common.add_run_options(parser, "smoke run, figures meaningless")
    args = parser.parse_intermixed_args(argv)
    args.base_overrides, args.arm_base_overrides = [], []
    if args.quick:
        args.pretrain_images, args.own_images, args.test_images, args.size = 24, 10, 6, 64
        args.pretrain_steps, args.steps, args.seeds = 3, 3, "0"
        args.threads = args.threads or 1
        args.base_overrides = ["model.input_size=[64,64]", "batch_size=4"]
        args.arm_base_overrides = ["batch_size=4", "freeze_backbone_steps=1", "calibrate=false"]
    args.seeds = common.seed_list(parser, args.seeds)
    if args.steps < 1 or args.pretrain_steps < 1:
        parser.error("need --steps >= 1 and --pretrain-steps >= 1")
    if args.pretrain_images < 3 or args.own_images < 2 or args.test_images < 1:
        parser.error("need --pretrain-images >= 3, --own-images >= 2, --test-images >= 1")
    args.arms = common.arm_list(parser, args.arms, ARMS, control="scratch")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_threads(args.threads)
    started = time.perf_counter()
    data = make_data(args)
    roots = data["roots"]
    bases = train_bases(roots, args)
    inits = {}
    for arm in ("finetune", "placebo"):
        if arm in args.arms:
            inits[arm] = init_check(ARM_CONFIG, roots["own"], arm_overrides(arm, bases, args))
            print(f"[{arm}] init_from loads {inits[arm]['loaded']} tensors, "
                  f"{inits[arm]['new']} new: " + ", ".join(
                      f"{k} <- {v}" for k, v in inits[arm]["categories"].items()), flush=True)
    own_test = split_records(roots["own"], "coco", "test", EmotionSet(OWN_SET, OWN_EMOTIONS))
    runs: dict[str, dict[int, dict[str, object]]] = {arm: {} for arm in args.arms}
    configs: dict[str, dict[str, object]] = {}
    for seed in args.seeds:
        for arm in args.arms:
            runs[arm][seed] = run_arm(arm, seed, bases, roots, args)
            configs.setdefault(arm, runs[arm][seed].pop("config"))
            runs[arm][seed].pop("config", None)
    figures: dict[str, object] = {
        **summary(runs, bases, data, inits, chance_er_map(own_test), args),
        "config_differences": config_differences(configs),
        "bases": bases,
        "setup": {"steps": args.steps, "seeds": args.seeds,
                  "pretrain_steps": args.pretrain_steps,
                  "pretrain_images": args.pretrain_images, "own_images": args.own_images,
                  "test_images": args.test_images, "size": args.size,
                  "data_seed": args.data_seed, "own_emotions": list(OWN_EMOTIONS),
                  "own_splits": data["own_splits"], "pretrain_splits": data["pretrain_splits"],
                  "base_config": str(BASE_CONFIG), "arm_config": str(ARM_CONFIG),
                  "base_overrides": args.base_overrides, "overrides": args.overrides,
                  "arms": args.arms, "quick": args.quick,
                  "config": configs.get("finetune", configs["scratch"]),
                  "roots": {k: str(v) for k, v in roots.items()}},
        "machine": machine(), "command": " ".join(sys.argv),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.json, figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
