"""How the distillation defaults were chosen: candidates scored on the *validation* split.

``training.distill``'s ``weights.emotions`` (4) and ``lr_schedule`` (constant) were chosen with
this script on the data and teacher that ``bench_student.py`` made (run it first, with the same
``--out``): each candidate distils a student from the teacher on the unlabelled pool (seed 0,
the benchmark's steps, batch and augmentation) and is scored on the labelled set's
**validation** split (ER mAP, PD AP x100, beside the teacher's), never on its test split.

    python benchmarks/tune_student.py [--out outputs/bench_student] [--steps 600]
        [--json PATH] [--candidates "lr_schedule=cosine weights.emotions=1" ...]

About 5 minutes per candidate on 2 cores. The supervised arm of the benchmark is not tuned
(bench_learn's own settings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_student import AUGMENT, REPO
from common import format_table, machine, write_json

from training.experiments import distill_run, model_figures, split_records

CANDIDATES = ("lr_schedule=cosine weights.emotions=1", "lr_schedule=constant weights.emotions=1",
              "lr_schedule=constant weights.emotions=4",
              "lr_schedule=constant weights.emotions=10")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_student")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--student", default="student_large")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    teacher = args.out / "runs" / "teacher" / "final.pt"
    if not teacher.exists():
        parser.error(f"{teacher} not found: run benchmarks/bench_student.py --out {args.out}")
    records = split_records(args.out / "data" / "lab", "emotic", "val")
    rows = [("candidate", "val ER mAP", "val PD AP")]
    reference = model_figures(teacher, records)
    rows.append(("teacher", f"{reference['er_map']}", f"{reference['pd_ap']}"))
    figures: dict[str, object] = {"teacher": reference, "candidates": {}}
    lr = 0.004  # bench_learn's, as bench_student gives the distilled arms
    for n, candidate in enumerate(args.candidates):
        run = distill_run(teacher, [args.out / "data" / "pool" / "emotic"],
                          args.out / "tune" / f"candidate{n}", 0,
                          [f"student={args.student}", f"lr={lr}", *AUGMENT,
                           f"max_steps={args.steps}", f"batch_size={args.batch_size}",
                           "workers=0", *candidate.split()])
        found = model_figures(run.best, records)
        figures["candidates"][candidate] = {**found, "steps": run.steps}
        rows.append((candidate, f"{found['er_map']}", f"{found['pd_ap']}"))
        print(f"[{candidate}] val ER mAP {found['er_map']}, PD AP {found['pd_ap']}", flush=True)
    figures.update({"machine": machine(), "command": " ".join(sys.argv)})
    write_json(args.json, figures)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
