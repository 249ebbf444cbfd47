"""Multitask benchmark: the ABAW-style extensions on the synthetic scenes (issue 8).

One run, the same training budget for every arm (``--budget-minutes``, training time as the
trainer counts it; validation and evaluation come on top):

1. data: a synthetic CAER set with both label sets (:mod:`training.datasets.synthetic`
   ``heco=True``): EMOTIC's 26 multi-label categories with valence/arousal/dominance on the
   EMOTIC split, HECO's 8 single-label categories on the HECO partition of the scenes;
2. ``teacher`` (Algorithm 1, first stage): a model trained on HECO's labels only (another
   label set than the student's EMOTIC);
3. ``base``: the student config (``training/configs/bench_multitask.yaml``: EMOTIC + HECO +
   continuous head, bottom-up, detection and person-centric heads);
4. ``distill``: the same + soft labels from the teacher (``distill``: HECO scores learnt on
   the EMOTIC images, which have none, eq. 13 with the paper's alpha 10, beta 0.9, T 2);
5. ``discriminator``: the same as ``base`` + the task discriminator (EMOTIC vs HECO samples)
   behind the gradient reversal layer, delta ramped 0 -> 1.

Every arm's ``final.pt`` is evaluated on the held-out test splits with
:func:`training.evaluate.evaluate` (the node's Predictor): on EMOTIC ``er_map``, ``pd_ap``,
``ccc_mean`` (x100) and the ABAW-style score; on HECO ``er_map_heco`` and ``macro_f1``. The
``base`` model is evaluated a second time with the BU+PC fusion (``fusion: mean``, BENet
Table 4) -> the ``fusion`` arm. Gains are arm minus base. Whichever way they come out is
reported.

Usage::

    python benchmarks/bench_multitask.py [--json PATH] [--budget-minutes 6] [--out DIR]
        [--seed 0] [--images 1400] [--size 128] [--threads N] [--quick] [key=value ...]

``--quick`` is a smoke run (40 images, a few seconds of training per arm, one thread): it
checks the whole path; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
from common import machine, rounded, write_json

from caer_ros.inference.predictor import Predictor
from training.config import load_config
from training.datasets.synthetic import generate
from training.evaluate import evaluate, load_split
from training.train import Trainer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "training" / "configs" / "bench_multitask.yaml"
TEACHER = ["model.categories=[heco]", "model.continuous=false", "data.train=[heco]",
           "data.val=[heco]", "tasks=[bu,det]", "model.person_centric=false",
           "pre_transforms.extract_subject=0.0"]
ARMS = {
    "base": [],
    "distill": ["distill={teacher: TEACHER, temperature: 2.0, alpha: 10.0, beta: 0.9}"],
    "discriminator": ["discriminator={delta: 1.0, schedule: ramp, hidden: 128}"],
}


def train(name: str, data: Path, overrides: list[str], args: argparse.Namespace
          ) -> tuple[Path, dict[str, object]]:
    out = args.out / "runs" / name
    config = load_config(args.config, [*args.overrides, *overrides, f"out={out}",
                                       f"seed={args.seed}",
                                       f"budget_minutes={args.budget_minutes}"], data)
    print(f"[{name}] training: budget {args.budget_minutes:g} min -> {out}", flush=True)
    trainer = Trainer(config, restart=True, progress=args.progress)
    history = trainer.run()
    state = trainer.state
    last = history[-1] if history else {}
    info = {"train_s": round(state.elapsed_s, 1), "steps": state.global_step,
            "s_per_step": round(state.elapsed_s / max(1, state.global_step), 3),
            "last_val_loss": rounded(last.get("val", {}).get("total"))}
    return out / "final.pt", info


def scores(model: Path, data: Path, fusion: str, args: argparse.Namespace,
           sets: tuple[str, ...] = ("emotic", "heco")) -> dict[str, object]:
    """The model on the test splits of ``sets`` (EMOTIC: ER, PD, CCC, ABAW; HECO: ER, F1)."""
    predictor = Predictor.from_file(model, fusion=fusion)
    out: dict[str, object] = {}
    if "emotic" in sets:
        result = evaluate(predictor, load_split(data, "emotic", "test")[0],
                          progress=args.progress)
        out.update(er_map=rounded(result.er_map), pd_ap=rounded(result.pd_ap),
                   oer_map=rounded(result.oer_map),
                   ccc_mean=None if result.ccc is None else rounded(100 * result.ccc_mean),
                   mean_f1=rounded(result.mean_f1), abaw_score=rounded(result.abaw_score))
    # the HECO partition of the training config (data.heco_seed, default 0)
    result = evaluate(predictor, load_split(data, "heco", "test")[0], progress=args.progress)
    out.update(er_map_heco=rounded(result.er_map), macro_f1_heco=rounded(result.macro_f1))
    return out


def summary(arms: dict[str, dict[str, object]]) -> dict[str, object]:
    """Headline figures: the base model's CCC and ER mAP; per arm its EMOTIC ER mAP, HECO macro
    F1 and their gains over the base model (arm minus base)."""
    base = arms["base"]
    out: dict[str, object] = {"ccc_mean": base["ccc_mean"], "er_map": base["er_map"],
                              "macro_f1_heco": base["macro_f1_heco"]}
    for arm in ("distill", "discriminator", "fusion"):
        if arm not in arms:
            continue
        for key, prefix in (("er_map", ""), ("macro_f1_heco", "macro_f1_heco_")):
            value, reference = arms[arm].get(key), base.get(key)
            out[f"{key}_{arm}"] = value
            if value is not None and reference is not None:
                out[f"{prefix}{arm}_gain"] = round(value - reference, 2)
    return out


def table(figures: dict[str, object]) -> str:
    rows = [("arm", "ER(emotic)", "PD", "CCC", "ER(heco)", "F1(heco)", "train s/steps")]

    def cell(arm: dict[str, object], key: str) -> str:
        value = arm.get(key)
        return "-" if value is None else f"{value:.1f}"

    for name, arm in figures["arms"].items():
        steps = f"{arm['train_s']:.0f}/{arm['steps']}" if "steps" in arm else "(base model)"
        rows.append((name, *(cell(arm, key) for key in (
            "er_map", "pd_ap", "ccc_mean", "er_map_heco", "macro_f1_heco")), steps))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--budget-minutes", type=float, default=6.0,
                        help="training time of each arm and of the teacher (default 6)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_multitask")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=1400)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated, among {', '.join(ARMS)} (base always runs)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="smoke run, figures meaningless")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="training-config overrides for every run")
    args = parser.parse_intermixed_args(argv)
    if args.quick:
        args.images, args.budget_minutes, args.threads = 40, 0.05, 1
        args.size = 64
        args.overrides = ["model.input_size=[64,64]", "val_every=1", "batch_size=8",
                          "calibrate=false", *args.overrides]
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    args.arms = ["base", *(a for a in arms if a != "base")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = args.out / "data"
    if data.exists():
        shutil.rmtree(data)
    print(f"generating {args.images} synthetic scenes ({args.size} px) in {data}", flush=True)
    generate(data, args.images, args.seed, args.size, heco=True)
    runs: dict[str, dict[str, object]] = {}
    teacher = None
    if "distill" in args.arms:
        teacher, info = train("teacher", data, TEACHER, args)
        runs["teacher"] = {**info, **scores(teacher, data, "none", args, sets=("heco",))}
    for arm in args.arms:
        overrides = [o.replace("TEACHER", str(teacher)) for o in ARMS[arm]]
        model, info = train(arm, data, overrides, args)
        runs[arm] = {**info, **scores(model, data, "none", args), "model": str(model),
                     "arm_overrides": overrides}
        if arm == "base":
            runs["fusion"] = {**scores(model, data, "mean", args), "model": str(model)}
    figures = {
        **summary(runs),
        "arms": runs,
        "setup": {"images": args.images, "size": args.size, "seed": args.seed,
                  "budget_minutes": args.budget_minutes, "config": str(args.config),
                  "overrides": args.overrides, "quick": args.quick,
                  "teacher": "HECO labels only (Algorithm 1, stage 1)"},
        "machine": machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(table(figures))
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
