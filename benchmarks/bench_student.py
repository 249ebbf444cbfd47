"""Student benchmark: a compact student distilled without labels, its speed and its fidelity
(issue 31).

1. **Speed** (``student_speedup``): BENet (the public network, ``benet`` backbone, untrained:
   speed does not depend on the weights) and the student preset (``--student``) exported to
   ONNX with the same inference settings (``resize: short_side``, 512), on the same 640x480
   photo (4:3: a 512x704 input), in ONNX Runtime fp32 on the CPU, one after the other in one
   run: the graph alone (``runner``: the network, activation, fusions and row sums) and the
   whole predictor (``predict``: preprocess, graph, peaks and score reading). The speedup is
   the graph's; the predictor's is beside it.
2. **Fidelity**, on synthetic CAER scenes (:func:`training.datasets.synthetic.generate`,
   ``--size`` px), where true labels exist:

   - ``lab``: ``--lab-images`` labelled scenes (train / val / test 70/15/15);
   - ``pool``: ``--pool-images`` scenes of a stream of their own (another data seed), read as
     a folder of images only: the robot's unlabelled recordings (disjoint from ``lab``);
   - **teacher**: the learnability benchmark's BENet (``training/configs/bench_learn.yaml``,
     ``hrnet_cpu``, 128 px, centre extraction) trained with labels on ``lab`` for
     ``--teacher-steps`` steps (``final.pt``; one teacher for every seed);
   - arms, each ``--steps`` optimiser steps, batch 16, for each seed of ``--seeds``:

     - ``distilled``: :mod:`training.distill` from the teacher on ``pool``, **no labels**;
     - ``supervised``: the same student preset trained **with** ``lab``'s labels by
       ``training.train`` (bench_learn's config with the student's model section);
     - ``placebo``: as ``distilled``, each image learning the teacher's maps of another image
       of its batch (``placebo=true``): the same computation without the teacher's knowledge
       of the image;

     each arm's ``best.pt`` (lowest validation loss of its own kind: the distillation loss on
     held-out pool images; the supervised loss on ``lab``'s val split) scored on ``lab``'s
     test split by :func:`training.evaluation.evaluate.evaluate` (ER mAP, PD AP x100), and
     the distilled arms by agreement with the teacher on ``lab``'s test images
     (:func:`training.evaluation.agreement.agreement`: person AP with the teacher's people as
     ground truth, ER mAP with its labels, mean absolute score difference).

Ingredient checks before an arm is trusted: the teacher has learnt (test ER mAP at least
chance + 20, PD AP at least 30); each distillation's validation loss fell (last at most 0.9 of
first); equal steps in every arm. ``checks_passed`` says whether all hold.

Figures: ``student_speedup`` (target at least 10), ``er_gap`` = teacher ER mAP - distilled
(target at most 2), ``pd_gap`` (target at most 3), ``label_free_minus_supervised`` and
``distilled_minus_placebo`` (paired: the same seed's runs subtracted), each with its sample
standard deviation over seeds (``*_std``); a gap target is met only when ``gap + std`` is
within it, the speedup only when the slower of its repeats is. Training seconds of each arm
beside its steps.

Usage::

    python benchmarks/bench_student.py [--json PATH] [--steps 600] [--seeds 0,1,2]
        [--teacher-steps 1000] [--lab-images 600] [--pool-images 600] [--size 128]
        [--student student_large] [--data-seed 0] [--out DIR] [--skip-speed]
        [--skip-fidelity] [--threads N] [--progress] [--quick]

``--quick`` is a smoke run (64 px, a few images and steps, one seed, a 128 px speed input): it
checks the whole path, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch
from common import format_table, machine, mean_std, median_ms, paired, photo, write_json

from caer_ros.inference.export import export_onnx
from caer_ros.inference.predictor import Predictor
from caer_ros.inference.preprocess import prepare
from caer_ros.model.checkpoint import save_model_file
from caer_ros.model.config import STUDENT_PRESETS, ModelConfig
from caer_ros.model.inference_settings import InferenceSettings
from caer_ros.model.network import build_model
from training.datasets.frames import collect_frames
from training.datasets.synthetic import generate
from training.evaluation.agreement import agreement
from training.experiments import (
    chance_er_map,
    distill_run,
    model_figures,
    split_images_folder,
    split_records,
    student_overrides,
    train_run,
)

REPO = Path(__file__).resolve().parents[1]
TEACHER_CONFIG = REPO / "training" / "configs" / "bench_learn.yaml"
ARMS = ("distilled", "supervised", "placebo")
TARGETS = {"student_speedup": 10.0, "er_gap": 2.0, "pd_gap": 3.0}
TEACHER_MARGIN = 20.0  # the teacher has learnt: ER mAP at least chance + this
TEACHER_PD = 30.0  # ... and PD AP at least this
LOSS_FALL = 0.9  # a distillation has learnt: last val loss at most this share of the first
# bench_learn's light augmentation (noise and blur hide the faces' few pixels at 128 px)
AUGMENT = ["augment.perspective_p=0", "augment.blur_p=0", "augment.noise_p=0",
           "augment.jitter_p=0.5"]


# --------------------------------------------------------------------------- speed


def speed(args: argparse.Namespace) -> dict[str, object]:
    """``student_speedup`` (module docstring, 1)."""
    folder = args.out / "speed"
    folder.mkdir(parents=True, exist_ok=True)
    frame = photo(args.photo_width, args.photo_height)
    settings = {"resize": "short_side", "short_side": args.short_side}
    teacher_config = ModelConfig()
    configs = {"benet": teacher_config,
               args.student: ModelConfig.student(args.student, teacher_config)}
    predictors, batches = {}, {}
    for name, config in configs.items():
        pt = folder / f"{name}.pt"
        inference = dataclasses.replace(InferenceSettings.for_model(config), **settings)
        save_model_file(pt, build_model(config, seed=0).eval(), inference)
        print(f"[speed] exporting {name} to ONNX", flush=True)
        predictors[name] = Predictor.from_file(export_onnx(pt, folder / f"{name}.onnx"))
        size = predictors[name].input_size_for(*frame.shape[:2])
        batches[name] = prepare(frame, size, inference.resize, mean=config.input_mean,
                                std=config.input_std)[0]
    graph: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):  # side by side: each repeat times every model in turn
        for name, predictor in predictors.items():
            graph[name].append(median_ms(partial(predictor.runner.run, batches[name]),
                                         args.runs, warmup=2))
    figures: dict[str, dict[str, object]] = {}
    for name, predictor in predictors.items():
        whole = median_ms(partial(predictor.predict, frame), args.runs, warmup=1)
        figures[name] = {"input": list(predictor.input_size_for(*frame.shape[:2])),
                         "graph_ms": [round(v, 1) for v in graph[name]],
                         "predict_ms": round(whole, 1), "backend": predictor.backend,
                         "parameters_m": round(sum(p.numel() for p in build_model(
                             configs[name]).parameters()) / 1e6, 2)}
        print(f"[speed] {name}: input {figures[name]['input']}, graph "
              f"{min(graph[name]):.1f}-{max(graph[name]):.1f} ms, predict {whole:.1f} ms",
              flush=True)
    teacher, student = figures["benet"], figures[args.student]
    ratios = [t / s for t, s in zip(teacher["graph_ms"], student["graph_ms"], strict=True)]
    return {"per_model": figures, "student_speedup": round(sorted(ratios)[len(ratios) // 2], 2),
            "student_speedup_min": round(min(ratios), 2),
            "predict_speedup": round(teacher["predict_ms"] / student["predict_ms"], 2),
            "student_fps": round(1000.0 / student["predict_ms"], 1),
            "frame": [args.photo_height, args.photo_width]}


# --------------------------------------------------------------------------- fidelity


def make_data(args: argparse.Namespace) -> dict[str, Path]:
    data = args.out / "data"
    if data.exists():
        shutil.rmtree(data)
    print(f"[data] {args.lab_images} labelled scenes and {args.pool_images} unlabelled pool "
          f"scenes ({args.size} px) -> {data}", flush=True)
    generate(data / "lab", args.lab_images, args.data_seed, args.size)
    generate(data / "pool", args.pool_images, args.data_seed + 1000, args.size)
    return {"lab": data / "lab", "pool": data / "pool" / "emotic",
            "test_images": split_images_folder(data / "lab", "test", data / "lab_test_images")}


def train_teacher(roots: dict[str, Path], args: argparse.Namespace) -> dict[str, object]:
    records = split_records(roots["lab"], "emotic", "test")
    print(f"[teacher] {args.teacher_steps} steps with labels -> {args.out / 'runs/teacher'}",
          flush=True)
    run = train_run(TEACHER_CONFIG, roots["lab"], args.out / "runs" / "teacher", args.data_seed,
                    [f"max_steps={args.teacher_steps}", "inference.extraction=center",
                     *args.teacher_overrides], args.progress)
    figures = model_figures(run.final, records, args.progress)
    chance = chance_er_map(records)
    print(f"[teacher] test ER mAP {figures['er_map']} (chance {chance}), PD AP "
          f"{figures['pd_ap']}", flush=True)
    return {**run.figures(), **figures, "chance_er_map": chance, "model": str(run.final),
            "lr": run.config["optim"]["lr"]}


def run_arm(arm: str, seed: int, teacher: dict[str, object], roots: dict[str, Path],
            args: argparse.Namespace) -> dict[str, object]:
    out = args.out / "runs" / f"{arm}_seed{seed}"
    print(f"[{arm} seed {seed}] {args.steps} steps -> {out}", flush=True)
    steps = [f"max_steps={args.steps}", f"batch_size={args.batch_size}", "workers=0"]
    if arm == "supervised":
        run = train_run(TEACHER_CONFIG, roots["lab"], out, seed,
                        [*student_overrides(args.student), "inference.extraction=center",
                         *steps, *args.supervised_overrides], args.progress)
    else:
        run = distill_run(teacher["model"], [roots["pool"]], out, seed,
                          [f"student={args.student}", f"lr={teacher['lr']}", *AUGMENT, *steps,
                           f"placebo={'true' if arm == 'placebo' else 'false'}",
                           *args.distill_overrides], args.progress)
    figures = model_figures(run.best, split_records(roots["lab"], "emotic", "test"),
                            args.progress)
    result: dict[str, object] = {**run.figures(), **figures, "model": str(run.best)}
    if arm != "supervised":
        losses = [v["val_loss"] for v in run.validations if v["val_loss"] is not None]
        result["val_loss_first_last"] = [losses[0], losses[-1]] if losses else None
        pool = collect_frames([roots["test_images"]])
        found = agreement(Predictor.from_file(run.best), Predictor.from_file(teacher["model"]),
                          pool, progress=args.progress)
        result["agreement"] = found.to_json()
    print(f"[{arm} seed {seed}] test ER mAP {figures['er_map']}, PD AP {figures['pd_ap']}; "
          f"{run.steps} steps in {run.train_s:.0f} s", flush=True)
    return result


def summary(runs: dict[str, dict[int, dict[str, object]]], teacher: dict[str, object],
            args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    arms: dict[str, object] = {}
    for arm, by_seed in runs.items():
        entry: dict[str, object] = {"seeds": {str(s): r for s, r in by_seed.items()},
                                    "steps": [r["steps"] for r in by_seed.values()]}
        for key in ("er_map", "pd_ap", "train_s", "s_per_step"):
            entry[key], entry[f"{key}_std"] = mean_std([r.get(key) for r in by_seed.values()])
        if arm != "supervised":
            for key in ("pd_ap", "er_map", "score_mae"):
                values = [r["agreement"][key] for r in by_seed.values()]
                entry[f"agreement_{key}"], entry[f"agreement_{key}_std"] = mean_std(values)
        arms[arm] = entry
    out["arms"] = arms
    if "distilled" in runs:
        for key, name in (("er_map", "er_gap"), ("pd_ap", "pd_gap")):
            gaps = [teacher[key] - r[key] for r in runs["distilled"].values()
                    if r.get(key) is not None]
            out[name], out[f"{name}_std"] = mean_std(gaps)
    for arm, control, name in (("distilled", "supervised", "label_free_minus_supervised"),
                               ("distilled", "placebo", "distilled_minus_placebo")):
        if arm in runs and control in runs:
            out[name], out[f"{name}_std"] = paired(runs, arm, "er_map", control)
    checks = {"teacher_er_map": teacher["er_map"], "teacher_pd_ap": teacher["pd_ap"],
              "chance_er_map": teacher["chance_er_map"],
              "teacher_learnt": teacher["er_map"] is not None
              and teacher["er_map"] >= teacher["chance_er_map"] + TEACHER_MARGIN
              and (teacher["pd_ap"] or 0) >= TEACHER_PD,
              "equal_steps": len({r["steps"] for b in runs.values() for r in b.values()}) == 1}
    falls = {f"{arm}_seed{s}": r["val_loss_first_last"] for arm in ("distilled", "placebo")
             if arm in runs for s, r in runs[arm].items()}
    checks["distillation_losses_fell"] = all(
        v is not None and v[1] <= LOSS_FALL * v[0] for k, v in falls.items()
        if k.startswith("distilled"))
    checks["val_loss_first_last"] = falls
    out["checks"] = checks
    out["checks_passed"] = all(v for k, v in checks.items() if isinstance(v, bool))
    return out


def targets_met(figures: dict[str, object]) -> dict[str, bool | None]:
    met: dict[str, bool | None] = {}
    if figures.get("speed"):
        met["student_speedup"] = figures["speed"]["student_speedup_min"] >= \
            TARGETS["student_speedup"]
    for key in ("er_gap", "pd_gap"):
        value, spread = figures.get(key), figures.get(f"{key}_std")
        met[key] = None if value is None else value + (spread or 0.0) <= TARGETS[key]
    return met


def table(figures: dict[str, object]) -> str:
    lines: list[str] = []
    if figures.get("speed"):
        s = figures["speed"]
        rows = [("model", "input", "graph ms", "predict ms", "M params")]
        for name, m in s["per_model"].items():
            rows.append((name, "x".join(map(str, m["input"])),
                         "/".join(f"{v:.0f}" for v in m["graph_ms"]), f"{m['predict_ms']:.0f}",
                         f"{m['parameters_m']:.2f}"))
        lines += [format_table(rows),
                  f"student_speedup = {s['student_speedup']} (min {s['student_speedup_min']}; "
                  f"whole predictor {s['predict_speedup']}, student {s['student_fps']} frames/s)"]
    if figures.get("arms"):
        rows = [("arm", "test ER mAP", "test PD AP", "agree PD AP", "agree ER mAP",
                 "score MAE", "steps", "train s")]

        def pm(entry: dict[str, object], key: str) -> str:
            value, spread = entry.get(key), entry.get(f"{key}_std")
            return "-" if value is None else f"{value:.1f}+-{spread:.1f}"

        t = figures["teacher"]
        rows.append(("teacher", f"{t['er_map']}", f"{t['pd_ap']}", "-", "-", "-",
                     str(t["steps"]), f"{t['train_s']:.0f}"))
        for arm, entry in figures["arms"].items():
            rows.append((arm, pm(entry, "er_map"), pm(entry, "pd_ap"),
                         pm(entry, "agreement_pd_ap"), pm(entry, "agreement_er_map"),
                         pm(entry, "agreement_score_mae"),
                         ",".join(map(str, entry["steps"])), pm(entry, "train_s")))
        lines.append(format_table(rows))
        for key in ("er_gap", "pd_gap", "label_free_minus_supervised",
                    "distilled_minus_placebo"):
            if figures.get(key) is not None:
                lines.append(f"{key} = {figures[key]:+.2f} +- {figures[f'{key}_std']:.2f}")
        lines.append("ingredient checks " + ("passed" if figures["checks_passed"]
                                             else "FAILED (do not trust the arms)"))
    met = figures.get("targets_met", {})
    lines.append("targets: " + ", ".join(
        f"{k} {'met' if v else 'NOT met' if v is not None else '-'}" for k, v in met.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--student", default="student_large", choices=sorted(STUDENT_PRESETS))
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps of every arm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--lab-images", type=int, default=600)
    parser.add_argument("--pool-images", type=int, default=600)
    parser.add_argument("--size", type=int, default=128, help="scene side in pixels")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--short-side", type=int, default=512, help="speed: network short side")
    parser.add_argument("--runs", type=int, default=10, help="speed: timed runs per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="speed: repeats (spread)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_student")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--quick", action="store_true", help="smoke run, figures meaningless")
    args = parser.parse_args(argv)
    args.photo_width, args.photo_height = 640, 480
    args.teacher_overrides, args.supervised_overrides, args.distill_overrides = [], [], []
    if args.quick:
        args.lab_images, args.pool_images, args.size = 24, 12, 64
        args.teacher_steps, args.steps, args.seeds, args.batch_size = 3, 3, "0", 4
        args.short_side, args.runs, args.repeats = 128, 2, 2
        args.photo_width, args.photo_height = 160, 120
        args.threads = args.threads or 1
        args.teacher_overrides = ["model.input_size=[64,64]", "batch_size=4",
                                  "calibrate=false"]
        args.supervised_overrides = ["model.input_size=[64,64]", "calibrate=false"]
        args.distill_overrides = ["val_fraction=0.25"]  # 3 of 12 pool images: placebo pairs
    try:
        args.seeds = list(dict.fromkeys(int(s) for s in args.seeds.split(",") if s))
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds or min(args.steps, args.teacher_steps, args.batch_size) < 1:
        parser.error("need a seed, and --steps, --teacher-steps, --batch-size >= 1")
    if args.lab_images < 7 or args.pool_images < 2:
        parser.error("need --lab-images >= 7 and --pool-images >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {}
    if not args.skip_speed:
        figures["speed"] = speed(args)
    if not args.skip_fidelity:
        roots = make_data(args)
        teacher = train_teacher(roots, args)
        runs: dict[str, dict[int, dict[str, object]]] = {arm: {} for arm in ARMS}
        configs: dict[str, object] = {}
        for seed in args.seeds:
            for arm in ARMS:
                runs[arm][seed] = run_arm(arm, seed, teacher, roots, args)
                configs.setdefault(arm, runs[arm][seed].pop("config", None))
        figures.update(summary(runs, teacher, args))
        figures["teacher"] = teacher
    figures["targets_met"] = targets_met(figures)
    figures["setup"] = {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in vars(args).items() if k != "json"}
    figures.update({"machine": machine(), "command": " ".join(sys.argv),
                    "wall_s": round(time.perf_counter() - started, 1)})
    write_json(args.json, figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
