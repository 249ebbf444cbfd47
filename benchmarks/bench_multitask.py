"""Multitask benchmark: the ABAW-KD methods (papers/abaw-multitask-kd-task-discriminator.txt) on
synthetic scenes where they have something to do (issue 19).

Data (:func:`training.datasets.synthetic.generate_pools`, one set for every run):

- two disjoint pools of scenes drawn from different seeds: EMOTIC-style (EMOTIC's 26
  multi-label categories and valence/arousal/dominance) and HECO-style (HECO's 8 single-label
  categories), the HECO-style images with a photometric style shift (``--shift``, 0 is the
  no-shift control). Labels are incomplete for real: an EMOTIC-style image has no HECO label
  and the reverse, and the pools share no image, so no test image is trained on;
- full-label cross-domain test sets (the generator knows both label sets of every person):
  the HECO head scored on EMOTIC-style images, the EMOTIC head on HECO-style images. Their mean
  ER mAP is ``cross_er_map``, what distillation (labels filled in from a teacher) and the task
  discriminator (features that do not tell the datasets apart) are meant to improve.

Arms, every one trained for the same number of steps (``--steps``, ``max_steps``) from the
same config (``training/configs/bench_multitask.yaml``) and seed, for each of ``--seeds``:

- ``base``: supervised losses only. It is also Algorithm 1's *teacher* (eq. 12 without the
  task loss: trained on every task), so ``distill`` minus ``base`` is the paper's student
  minus teacher;
- ``alpha_only``: eq. 13's alpha = 10 on every supervised term, no teacher (the control that
  separates the teacher's knowledge from alpha's reweighting);
- ``distill``: alpha = 10, beta = 0.9, the seed's ``base`` model as teacher, both directions,
  no temperature;
- ``disc_constant`` / ``disc_ramp``: the task discriminator behind the gradient reversal
  layer, delta 1, or ramped 0 -> 1 over the run's steps;
- ``placebo``: the same discriminator with delta = 0 (it learns, its reversed gradient never
  reaches the backbone: with the same seed the backbone then learns exactly as ``base``, so
  this control's gain is 0 unless the pipeline leaks);
- ``adaptive``: gamma_i = exp(0.5 n_i) from each task's validation metric, capped at 5.

Every arm's ``final.pt`` is evaluated (the node's Predictor,
:func:`training.evaluation.evaluate.evaluate`)
on the EMOTIC-style test split (``er_map``, ``pd_ap``, ``ccc_mean`` x100), the HECO-style test
partition (``er_map_heco``, ``macro_f1_heco``: over all 8 classes, with softmax scores) and
the two cross-domain cells. Gains are paired: arm minus ``base`` of the same seed, then mean
and standard deviation over the seeds, beside the seed spread of ``base`` itself.

Ingredient checks, reported before any arm is read: the data shift (the placebo
discriminator's task loss well under ln 2 = 0.69 means the datasets can be told apart), the
teacher (its cross-domain ER mAP against the same cells' chance level), the discriminator's
delta at the last step of the ramp ((n - 1) / n of the way for n steps when the ramp spans
the real run).

Usage::

    python benchmarks/bench_multitask.py [--json PATH] [--steps 250] [--seeds 0,1,2]
        [--images 400] [--test-images 100] [--shift 1.0] [--size 128] [--out DIR]
        [--arms base,...] [--threads N] [--quick] [key=value ...]

``--quick`` is a smoke run (one seed, a few steps per arm, 64 px): it checks the whole path;
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import common
import numpy as np
from common import format_table, machine, mean_std, rounded, write_json

from caer_ros.inference.predictor import Predictor
from training.config import load_config
from training.data.batches import config_heco
from training.datasets.heco import load_heco
from training.datasets.synthetic import generate_pools
from training.evaluation.evaluate import evaluate
from training.evaluation.metrics import er_map
from training.experiments import split_records
from training.train import Trainer

DEFAULT_CONFIG = common.CONFIGS / "bench_multitask.yaml"
DISC = "discriminator={{delta: {delta}, schedule: {schedule}, hidden: 128}}"
ARMS = {
    "base": [],
    "alpha_only": ["distill={teacher: null, alpha: 10.0}"],
    "distill": ["distill={teacher: TEACHER, alpha: 10.0, beta: 0.9}"],
    "disc_constant": [DISC.format(delta=1.0, schedule="constant")],
    "disc_ramp": [DISC.format(delta=1.0, schedule="ramp")],
    "placebo": [DISC.format(delta=0.0, schedule="constant")],
    "adaptive": ["task_weights=adaptive"],
}
# figures compared between arms (paired over seeds)
COMPARED = ("cross_er_map", "cross_er_map_emotic", "cross_er_map_heco", "er_map", "er_map_heco",
            "macro_f1_heco", "ccc_mean", "pd_ap")
HEADLINE_GAINS = {"distill_gain_cross": "distill", "alpha_gain": "alpha_only",
                  "disc_gain": "disc_constant", "disc_ramp_gain": "disc_ramp",
                  "placebo_gain": "placebo", "adaptive_gain": "adaptive"}


def train(arm: str, seed: int, data: Path, overrides: list[str], args: argparse.Namespace
          ) -> tuple[Path, dict[str, object]]:
    out = args.out / "runs" / f"{arm}_seed{seed}"
    config = load_config(args.config, [*args.overrides, *overrides, f"out={out}",
                                       f"seed={seed}", f"max_steps={args.steps}"], data)
    print(f"[{arm} seed {seed}] training {args.steps} steps -> {out}", flush=True)
    trainer = Trainer(config, restart=True, progress=args.progress)
    history = trainer.run()
    state = trainer.state
    last = history[-1] if history else {}
    info: dict[str, object] = {
        "steps": state.global_step, "train_s": round(state.elapsed_s, 1),
        "s_per_step": round(state.elapsed_s / max(1, state.global_step), 3),
        "val_metrics": {k: rounded(v, 4) for k, v in last.get("val_metrics", {}).items()},
        "validations": sum(1 for r in history if "val" in r)}
    terms = last.get("train", {})
    if "disc.task" in terms:
        info["disc_task_loss"] = rounded(terms["disc.task"], 4)  # last epoch's mean
        info["delta_end"] = rounded(trainer.extras[-1].module.reverse.delta, 4)
    if "task_weights" in last:
        info["gamma_end"] = {k: rounded(v, 3) for k, v in last["task_weights"].items()}
        info["gamma_max"] = rounded(max(max(r.get("task_weights", {0: 1.0}).values())
                                        for r in history), 3)
        # gamma only takes the values exp(0.5 n): the ones each task took, in order of size
        info["gamma_values"] = {task: sorted({rounded(r["task_weights"][task], 3)
                                              for r in history if task in
                                              r.get("task_weights", {})})
                                for task in last["task_weights"]}
    kd = {k: rounded(v, 4) for k, v in terms.items() if k.startswith("kd.")}
    if kd:
        info["kd_terms"] = kd
    return out / "final.pt", info


def test_sets(data: Path, args: argparse.Namespace) -> dict[str, list]:
    """The records each figure is measured on (module docstring)."""
    cross = data / "cross"
    heco = config_heco(load_config(args.config, args.overrides, data))
    return {
        "emotic": split_records(data, "emotic", "test"),
        "heco": split_records(data, "heco", "test", heco=heco),  # the training config's split
        # full-label cross-domain cells: the other dataset's head on each style
        "cross_emotic": split_records(cross / "heco_style", "emotic", "test"),
        "cross_heco": load_heco(cross / "emotic_style" / "HECO_Labels.csv",
                                cross / "emotic_style" / "heco" / "images")[0],
    }


def scores(model: Path, sets: dict[str, list], args: argparse.Namespace) -> dict[str, object]:
    predictor = Predictor.from_file(model)
    results = {name: evaluate(predictor, records, progress=args.progress)
               for name, records in sets.items()}
    emotic, heco = results["emotic"], results["heco"]
    cross_e, cross_h = results["cross_emotic"].er_map, results["cross_heco"].er_map
    return {
        "er_map": rounded(emotic.er_map), "pd_ap": rounded(emotic.pd_ap),
        "ccc_mean": None if emotic.ccc is None else rounded(100 * emotic.ccc_mean),
        "er_map_heco": rounded(heco.er_map), "macro_f1_heco": rounded(heco.macro_f1),
        "cross_er_map_emotic": rounded(cross_e),  # EMOTIC head, HECO-style images
        "cross_er_map_heco": rounded(cross_h),  # HECO head, EMOTIC-style images
        "cross_macro_f1_heco": rounded(results["cross_heco"].macro_f1),
        "cross_er_map": rounded((cross_e + cross_h) / 2),
    }


def chance_cross_er_map(sets: dict[str, list]) -> float:
    """ER mAP of constant scores on the cross-domain cells (each category's AP is then its
    positive rate): the level a teacher that knows nothing reaches."""
    values = []
    for name in ("cross_emotic", "cross_heco"):
        labels = np.array([p.categories for r in sets[name] for p in r.people])
        values.append(100 * er_map(np.zeros(labels.shape), labels)[0])
    return round(sum(values) / 2, 2)


def paired(runs: dict[str, dict[int, dict[str, object]]], arm: str, key: str
           ) -> tuple[float | None, float | None]:
    """Mean and standard deviation over seeds of ``arm`` minus ``base`` (same seed)."""
    return common.paired(runs, arm, key, "base")


def summary(runs: dict[str, dict[int, dict[str, object]]], chance: float
            ) -> dict[str, object]:
    """Headline figures (the issue's JSON keys) and every arm's means and paired gains."""
    base = runs["base"]
    out: dict[str, object] = {}
    out["cross_er_map_base"], out["base_seed_std"] = mean_std(
        [r["cross_er_map"] for r in base.values()])
    out["ccc_mean"], out["ccc_mean_std"] = mean_std([r["ccc_mean"] for r in base.values()])
    out["heco_macro_f1_base"], out["heco_macro_f1_base_std"] = mean_std(
        [r["macro_f1_heco"] for r in base.values()])
    for key, arm in HEADLINE_GAINS.items():
        if arm in runs:
            out[key], out[f"{key}_std"] = paired(runs, arm, "cross_er_map")
    out["distill_gain_std"] = out.pop("distill_gain_cross_std", None)
    if "distill" in runs and "alpha_only" in runs:
        out["distill_minus_alpha"], out["distill_minus_alpha_std"] = mean_std(
            [runs["distill"][s]["cross_er_map"] - runs["alpha_only"][s]["cross_er_map"]
             for s in runs["distill"]])
    arms: dict[str, object] = {}
    for arm, by_seed in runs.items():
        entry: dict[str, object] = {}
        for key in COMPARED:
            entry[key], entry[f"{key}_std"] = mean_std([r.get(key) for r in by_seed.values()])
            if arm != "base":
                entry[f"{key}_gain"], entry[f"{key}_gain_std"] = paired(runs, arm, key)
        entry["seeds"] = by_seed
        arms[arm] = entry
    checks: dict[str, object] = {"teacher_cross_er_map": out["cross_er_map_base"],
                                 "chance_cross_er_map": chance}
    for arm in ("placebo", "disc_constant", "disc_ramp"):
        if arm in runs:
            checks[f"{arm}_disc_task_loss"], _ = mean_std(
                [r.get("disc_task_loss") for r in runs[arm].values()])
    if "disc_ramp" in runs:
        checks["disc_ramp_delta_end"], _ = mean_std(
            [r.get("delta_end") for r in runs["disc_ramp"].values()])
    if "adaptive" in runs:  # per seed: a mean of maxima is no value gamma took
        checks["adaptive_gamma_max_per_seed"] = {
            seed: r.get("gamma_max") for seed, r in runs["adaptive"].items()}
        checks["adaptive_gamma_values_per_seed"] = {
            seed: r.get("gamma_values") for seed, r in runs["adaptive"].items()}
    out["checks"] = checks
    out["arms"] = arms
    return out


def table(figures: dict[str, object]) -> str:
    keys = ("cross_er_map", "er_map", "er_map_heco", "macro_f1_heco", "ccc_mean", "pd_ap")
    rows = [("arm", *keys)]
    for name, arm in figures["arms"].items():
        cells = []
        for key in keys:
            value, spread = arm.get(key), arm.get(f"{key}_std")
            gain = arm.get(f"{key}_gain")
            text = "-" if value is None else f"{value:.1f}+-{spread:.1f}"
            if gain is not None:
                text += f" ({gain:+.1f}+-{arm[f'{key}_gain_std']:.1f})"
            cells.append(text)
        rows.append((name, *cells))
    return format_table(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, default=250, help="training steps of every arm")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic pools")
    parser.add_argument("--out", type=Path, default=common.REPO / "outputs" / "bench_multitask")
    parser.add_argument("--images", type=int, default=400, help="scenes in each pool")
    parser.add_argument("--test-images", type=int, default=100,
                        help="scenes in each cross-domain test set")
    parser.add_argument("--shift", type=float, default=1.0,
                        help="style shift of the HECO-style images (0: the no-shift control)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated, among {', '.join(ARMS)} (base always runs)")
    common.add_run_options(parser, "smoke run, figures meaningless", overrides="every run")
    args = parser.parse_intermixed_args(argv)
    if args.quick:
        args.images, args.test_images, args.steps, args.threads = 16, 6, 2, 1
        args.size, args.seeds = 64, "0"
        args.overrides = ["model.input_size=[64,64]", "batch_size=4", *args.overrides]
    args.seeds = common.seed_list(parser, args.seeds)
    if args.steps < 1:
        parser.error("--steps: at least 1")
    args.arms = common.arm_list(parser, args.arms, tuple(ARMS), control="base")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_threads(args.threads)
    started = time.perf_counter()
    data = args.out / "data"
    if data.exists():
        shutil.rmtree(data)
    print(f"generating 2 x {args.images} synthetic scenes ({args.size} px, shift "
          f"{args.shift:g}) in {data}", flush=True)
    generate_pools(data, args.images, args.data_seed, args.size, args.shift, args.test_images)
    sets = test_sets(data, args)
    runs: dict[str, dict[int, dict[str, object]]] = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        teacher = None
        for arm in args.arms:
            overrides = [o.replace("TEACHER", str(teacher)) for o in ARMS[arm]]
            model, info = train(arm, seed, data, overrides, args)
            runs[arm][seed] = {**info, **scores(model, sets, args), "model": str(model),
                               "arm_overrides": overrides}
            if arm == "base":
                teacher = model  # Algorithm 1's teacher for this seed's distill arm
    figures = {
        **summary(runs, chance_cross_er_map(sets)),
        "setup": {"images_per_pool": args.images, "test_images": args.test_images,
                  "size": args.size, "shift": args.shift, "seeds": args.seeds,
                  "data_seed": args.data_seed, "steps": args.steps, "config": str(args.config),
                  "overrides": args.overrides, "quick": args.quick,
                  "teacher": "the same seed's base model (Algorithm 1: every task, supervised)"},
        "machine": machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(table(figures))
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
