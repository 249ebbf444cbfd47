#!/usr/bin/env python3
"""Make the fixture model: a small model trained on synthetic CAER scenes, for the tests that
need people to be found (``test/test_fixture_model.py``).

::

    python test/helpers/make_fixture_model.py [--seed 0] [--images 2000] [--steps 1200]
        [--threads 1] [--work outputs/fixture_model] [--out test/data/fixture_model]

1. scenes: :func:`training.datasets.synthetic.generate` draws ``--images`` scenes of
   :data:`SCENE_SIZE` px (train / val / test 70/15/15) from ``--seed``;
2. training: :func:`training.experiments.train_run` (:class:`training.train.Trainer`, the
   project's one training path) with ``test/data/fixture_model/train.yaml`` (the
   ``student_small`` preset at 128 px, ~1 M parameters) for ``--steps`` optimiser steps,
   training seed ``--seed``; its ``best.pt`` (lowest validation loss) is the fixture;
3. figures: the model file on the test split through the node's predictor
   (:func:`training.experiments.model_figures`: ER mAP, person AP, OER mAP, x100), printed and
   written with the run's numbers to ``OUT/figures.json``; the file goes to ``OUT/model.pt``.

Deterministic: the scenes depend only on the seed; the training (data order, augmentation,
initial weights) on the seed too, and its float sums on the thread count, fixed by
``--threads``: 1 by default, so the same command gives the same weights on any machine (same
torch and CPU kind), whatever its cores and load.

Why here: only tests need the fixture, and ``training.experiments`` is imported by benchmarks
and tests only (ARCHITECTURE.md); ``scripts/`` holds the setup helpers and the demo.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "test" / "data" / "fixture_model"
CONFIG = FIXTURE / "train.yaml"
MODEL = FIXTURE / "model.pt"
FIGURES = FIXTURE / "figures.json"
SCENE_SIZE = 128  # the scenes' side in pixels, the model's input size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="scenes and training seed")
    parser.add_argument("--images", type=int, default=2000, help="synthetic scenes (all splits)")
    parser.add_argument("--steps", type=int, default=1200, help="optimiser steps of 16 images")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the float sums, so the weights, depend on it)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "fixture_model",
                        help="scenes and run folder (started over)")
    parser.add_argument("--out", type=Path, default=FIXTURE,
                        help="where model.pt and figures.json go")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from training.datasets.synthetic import generate
    from training.experiments import chance_er_map, model_figures, split_records, train_run

    torch.set_num_threads(args.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    data = args.work / "data"
    if data.exists():
        shutil.rmtree(data)
    truth = generate(data, args.images, args.seed, SCENE_SIZE)
    print(f"[scenes] {', '.join(f'{k} {len(v)}' for k, v in truth.items())} -> {data}",
          flush=True)
    print(f"[train] {args.steps} steps, {CONFIG.relative_to(REPO)} -> {args.work / 'run'}",
          flush=True)
    run = train_run(CONFIG, data, args.work / "run", args.seed,
                    [f"max_steps={args.steps}"], args.progress)
    records = split_records(data, "emotic", "test")
    figures = model_figures(run.best, records, args.progress)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / MODEL.name
    shutil.copyfile(run.best, model)
    parameters = sum(p.numel() for p in torch.load(model, weights_only=True)
                     ["state_dict"].values() if p.is_floating_point())
    result = {
        "command": shlex.join(["python", *(
            [str(Path(sys.argv[0]).resolve().relative_to(REPO))] if argv is None else []),
            *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "threads": args.threads, "seed": args.seed,
        "images": args.images, "scene_size": SCENE_SIZE,
        "steps": run.steps, "best_step": run.best_step,
        "train_s": round(run.train_s, 1), "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(time.process_time() - cpu_started, 1),
        "model_bytes": model.stat().st_size, "parameters_m": round(parameters / 1e6, 3),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "test": {"images": figures["images"], "people": figures["people"],
                 "pd_ap": figures["pd_ap"], "er_map": figures["er_map"],
                 "oer_map": figures["oer_map"], "chance_er_map": chance_er_map(records)},
    }
    (args.out / FIGURES.name).write_text(json.dumps(result, indent=2) + "\n")
    test = result["test"]
    print(f"[figures] test split ({test['images']} images, {test['people']} people): person AP "
          f"{test['pd_ap']}, ER mAP {test['er_map']} (chance {test['chance_er_map']}), OER mAP "
          f"{test['oer_map']}", flush=True)
    print(f"[model] {model} ({result['model_bytes'] / 1e6:.2f} MB, {result['parameters_m']} M "
          f"parameters, best.pt of step {run.best_step}); training {result['train_s']} s, "
          f"all {result['wall_s']} s ({result['cpu_s']} s of CPU time)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
