"""Knowledge amalgamation benchmark: KA against fine-tuning and a baseline on the synthetic scenes.

The KA paper's comparison (papers/knowledge-amalgamation-single-shot-caer.txt, Tables 3-6:
baseline, F-T of a teacher, KA with one and with two teachers) rerun on 2 CPU cores, with
teachers trained here on synthetic sub-tasks. One run:

1. **Student data**: the synthetic CAER set (:func:`training.datasets.synthetic.generate`,
   EMOTIC format, train / val / test 70/15/15) of ``--images`` scenes of ``--size`` px, as
   ``bench_learn.py``. Its labels need the face, the pose and the context.
2. **Teacher data**: ``--teacher-images`` other scenes, drawn from a separate random stream
   (``default_rng([seed, 1])``: never the student's images), written as folder-per-class
   sets (``root/<train|val>/<class>/*.png``, 85/15 by scene):

   - ``face`` (the FER teacher's role): one crop per person, centred on the head (the head
     circle of :func:`~training.datasets.synthetic.draw_person`: 0.35 s below the box top,
     s the figure scale read from the box), classes ``smile`` / ``frown`` / ``open``. The
     crop keeps the scale the student's input has (:data:`FACE_INPUT` pixels of the
     letterboxed student input, 32 at 128 px): during amalgamation the teacher runs on the
     student's whole images, so it must know faces at the size they have there (a head is
     7-12 px across at 128 px), not blown up to fill its input;
   - ``context`` (the VEA teacher's role, the scene's mood): the background alone
     (:func:`~training.datasets.synthetic.draw_context` on an empty canvas, no people), classes
     ``party`` / ``night`` / ``park``, at the student's input size.

   Every teacher image goes through the same JPEG encoding (quality 95) as the student's.
3. **Teachers**: :func:`training.train_teacher.train_teacher` with
   ``training/configs/teacher_synthetic_face.yaml`` (the ``hrnet_cpu`` backbone: the student's
   architecture, so fine-tuning can start from a teacher's backbone), each for
   ``--teacher-minutes`` of training; ``best.pt`` (best validation macro F1) is the teacher.
   Their validation macro F1 and accuracy are reported: a teacher that did not learn its
   sub-task cannot teach it.
4. **Arms**, each trained on the student data for the same ``--budget-minutes`` (training time
   as the trainer counts it: the teachers' forward passes and the amalgamation module count
   in it, so the KA arms do fewer steps; validation and evaluation come on top), config
   ``training/configs/bench_amalgamation.yaml``:

   - ``baseline``: from scratch. The paper's baseline starts from ImageNet weights; there
     is no ImageNet checkpoint here (nor the data to make one on these machines), so this
     baseline is a randomly initialised student;
   - ``finetune``: the backbone starts from the face teacher's (``init_backbone``), the
     paper's F-T of the FER teacher;
   - ``ka_1``: knowledge amalgamation (:mod:`training.amalgamation`, eq. 7-9) from the face
     teacher, student from scratch;
   - ``ka_2``: the same from the face and the context teachers;
   - optional: ``finetune_context`` and ``ka_context`` (the context teacher alone).

   The amalgamation's common space has ``--ka-channels`` channels (C, default 32 instead of
   the paper's 96: the student's 1/4 branch has 16 channels here, HRNet-W32's 32, and at
   C = 96 a KA step costs 6-10 times a baseline step on CPU, at C = 32 about 2-3 times).

   Each arm's ``final.pt`` is evaluated on the held-out test split with
   :func:`training.evaluate.evaluate` through :class:`~caer_ros.inference.predictor.Predictor`
   (the node's code path): ``er_map``, ``pd_ap``, ``oer_map`` (x100).

Figures: ``er_map_baseline``, ``er_map_finetune``, ``er_map_ka_1``, ``er_map_ka_2``,
``ka_gain = er_map_ka_2 - er_map_baseline`` (and every arm's gain over the baseline), per arm
the steps, training seconds and seconds per step, per teacher its validation macro F1 and
accuracy. No target: the figures are reported whichever way they come out.

Usage::

    python benchmarks/bench_amalgamation.py [--json PATH] [--budget-minutes 5]
        [--teacher-minutes 2.5] [--out DIR] [--seed 0] [--images 1400] [--size 128]
        [--teacher-images 800] [--ka-channels 32] [--arms baseline,finetune,ka_1,ka_2]
        [--threads 1] [--quick] [key=value ...]

Threads. One torch thread by default (``--threads 0``: torch's default, one per core). On the
project's 2 shared cores, with other jobs running, two threads made a teacher step 14 times
slower than one (83 against 1155 steps in 2.5 minutes): the arms' step counts would measure
the neighbours' load rather than the arms.

``key=value`` are training-config overrides for every arm. ``--quick`` is a smoke run (40
images of 64 px, a few seconds per teacher and per arm, one thread): it checks the whole path,
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import bench_learn as learn
import cv2
import numpy as np
import torch
from common import machine, write_json

from caer_ros.inference.preprocess import PAD_RGB
from training.config import load_config
from training.datasets.synthetic import CONTEXTS, FACES, draw_context, generate, render_scene
from training.train_teacher import load_teacher_config, train_teacher

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "training" / "configs" / "bench_amalgamation.yaml"
TEACHER_CONFIG = REPO / "training" / "configs" / "teacher_synthetic_face.yaml"
TEACHER_CLASSES = {"face": FACES, "context": CONTEXTS}
# Arm -> (teacher whose backbone starts the student, teachers amalgamated)
ARMS = {"baseline": (None, ()), "finetune": ("face", ()), "ka_1": (None, ("face",)),
        "ka_2": (None, ("face", "context")), "finetune_context": ("context", ()),
        "ka_context": (None, ("context",))}
DEFAULT_ARMS = ("baseline", "finetune", "ka_1", "ka_2")
FACE_INPUT = 32  # face teacher input side = crop side in student-input pixels
HEAD_CENTRE = 0.35  # draw_person: head circle centre, figure scales below the box top
TEACHER_VAL = 0.15  # share of the teacher scenes in the teachers' validation sets
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]  # as the generator writes the student's images


# --------------------------------------------------------------------------- teacher data


def jpeg(image: np.ndarray) -> np.ndarray:
    """``image`` after a JPEG round trip at the student images' quality."""
    return cv2.imdecode(cv2.imencode(".jpg", image, JPEG)[1], cv2.IMREAD_COLOR)


def face_crop(image: np.ndarray, box: tuple[float, float, float, float], side: int,
              unit: float) -> np.ndarray:
    """The ``side`` x ``side`` square of ``image`` centred on the head of the figure in
    ``box`` (``unit``: box height of a figure of scale 1), pad colour where it leaves the
    image."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, y1 + HEAD_CENTRE * (y2 - y1) / unit
    c0, r0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_CONSTANT,
                                value=tuple(int(c) for c in PAD_RGB[::-1]))
    return padded[r0 + side:r0 + 2 * side, c0 + side:c0 + 2 * side]


def make_teacher_data(root: Path, scenes: int, seed: int, size: int, input_side: int
                      ) -> dict[str, dict[str, object]]:
    """Write the face and context sets under ``root/face`` and ``root/context`` (module
    docstring) from ``scenes`` scenes of ``size`` px; ``input_side``: the student's input
    side. Returns per teacher its folder and image counts per split and class."""
    rng = np.random.default_rng([seed, 1])
    unit = learn.figure_scale()
    side = max(1, round(FACE_INPUT * size / input_side))  # FACE_INPUT px once letterboxed
    counts = {name: {split: dict.fromkeys(classes, 0) for split in ("train", "val")}
              for name, classes in TEACHER_CLASSES.items()}
    for name, classes in TEACHER_CLASSES.items():
        for split in ("train", "val"):
            for label in classes:
                (root / name / split / label).mkdir(parents=True, exist_ok=True)
    first_val = scenes - max(1, round(TEACHER_VAL * scenes))
    for i in range(scenes):
        split = "train" if i < first_val else "val"
        image, people, context = render_scene(rng, size)
        image = jpeg(image)
        for j, person in enumerate(people):
            crop = face_crop(image, person.box, side, unit)
            if side != FACE_INPUT:
                crop = cv2.resize(crop, (FACE_INPUT, FACE_INPUT), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / "face" / split / person.face / f"{i:05d}_{j}.png"), crop)
            counts["face"][split][person.face] += 1
        background = np.zeros((size, size, 3), np.uint8)
        draw_context(background, context, rng)
        cv2.imwrite(str(root / "context" / split / context / f"{i:05d}.png"), jpeg(background))
        counts["context"][split][context] += 1
    return {name: {"root": str(root / name), "images": counts[name]} for name in counts}


# --------------------------------------------------------------------------- teachers


def run_teacher(name: str, data: dict[str, object], input_side: int,
                args: argparse.Namespace) -> dict[str, object]:
    """Train one teacher for ``--teacher-minutes``; its best validation epoch's figures."""
    out = args.out / "teachers" / name
    size = FACE_INPUT if name == "face" else input_side
    overrides = [f"name=synthetic_{name}", f"classes={json.dumps(list(TEACHER_CLASSES[name]))}",
                 f"input_size=[{size}, {size}]", f"out={out}", f"seed={args.seed}",
                 f"budget_minutes={args.teacher_minutes}", "epochs=1000", "workers=0",
                 *args.teacher_overrides]
    config = load_teacher_config(TEACHER_CONFIG, overrides, data["root"])
    print(f"[teacher {name}] {size} px, budget {args.teacher_minutes:g} min -> {out}",
          flush=True)
    started = time.perf_counter()
    history = train_teacher(config, progress=args.progress)
    best = max(history, key=lambda record: record["val"]["macro_f1"])
    steps = sum(record["steps"] for record in history)
    train_s = history[-1]["elapsed_s"]
    return {
        "val_macro_f1": round(best["val"]["macro_f1"], 4),
        "val_accuracy": round(best["val"]["accuracy"], 4),
        "val_f1": best["val"]["f1"],
        "best_epoch": best["epoch"],
        "epochs": len(history),
        "steps": steps,
        "train_s": train_s,
        "s_per_step": round(train_s / max(1, steps), 3),
        "wall_s": round(time.perf_counter() - started, 1),
        "input_size": [size, size],
        "images": data["images"],
        "data": data["root"],
        "model": str(out / "best.pt"),
    }


# --------------------------------------------------------------------------- arms


def arm_overrides(arm: str, teachers: dict[str, dict[str, object]],
                  args: argparse.Namespace) -> list[str]:
    """The training-config overrides that make ``arm`` (:data:`ARMS`)."""
    init, amalgamated = ARMS[arm]
    overrides = [f"init_backbone={json.dumps(teachers[init]['model'])}"] if init else []
    if amalgamated:
        files = [teachers[name]["model"] for name in amalgamated]
        overrides += [f"amalgamation.teachers={json.dumps(files)}",
                      f"amalgamation.channels={args.ka_channels}"]
    return overrides


def run_arm(arm: str, data: Path, teachers: dict[str, dict[str, object]],
            args: argparse.Namespace) -> dict[str, object]:
    """Train and evaluate one arm (:func:`bench_learn.run_arm`, with the arm's overrides)."""
    extra = arm_overrides(arm, teachers, args)
    arm_args = argparse.Namespace(**{**vars(args), "overrides": [*args.overrides, *extra]})
    result = {**learn.run_arm(arm, data, arm_args), "arm_overrides": extra}
    probes = args.out / "runs" / arm / "teacher_probe.json"
    if ARMS[arm][1] and probes.exists():  # KA arms: each teacher probed on the student's data
        result["teacher_probe"] = json.loads(probes.read_text())
    return result


# --------------------------------------------------------------------------- report


def summary(arms: dict[str, dict[str, object]],
            teachers: dict[str, dict[str, object]]) -> dict[str, object]:
    """The headline figures: ER mAP per arm, the gains over the baseline, the teachers."""
    out: dict[str, object] = {f"er_map_{arm}": value["er_map"] for arm, value in arms.items()}
    base = arms.get("baseline", {}).get("er_map")
    gains = {arm: round(value["er_map"] - base, 2) for arm, value in arms.items()
             if base is not None and arm != "baseline"}
    out["ka_gain"] = gains.get("ka_2")
    out["gains"] = gains
    for arm, value in arms.items():
        out[f"steps_{arm}"] = value["steps"]
    ka = [arms[a]["er_map"] for a in ("ka_1", "ka_2") if a in arms]
    if ka and base is not None:
        out["ka_beats_baseline"] = max(ka) > base
    if ka and "finetune" in arms:
        out["ka_beats_finetune"] = max(ka) > arms["finetune"]["er_map"]
    ratios = [arms[a]["collapse_ratio"] for a in arms
              if ARMS[a][1] and arms[a].get("collapse_ratio") is not None]
    out["collapse_ratio"] = max(ratios) if ratios else None  # the worst KA arm's, at the end
    probes = {p["name"]: {k: p[k] for k in ("metric", "score", "chance", "carries_little")}
              for a in arms for p in arms[a].get("teacher_probe", [])}  # teacher (set)
    out["teacher_probes"] = probes
    for name, teacher in teachers.items():
        out[f"teacher_{name}_val_macro_f1"] = teacher["val_macro_f1"]
        out[f"teacher_{name}_val_accuracy"] = teacher["val_accuracy"]
    return out


def table(figures: dict[str, object]) -> str:
    """Teachers, then the arms: ER / PD / OER, training time, steps, gain over the baseline."""
    rows = [("teacher", "val macro F1 / acc", "train s / steps", "s per step")]
    for name, teacher in figures["teachers"].items():
        rows.append((name, f"{teacher['val_macro_f1']:.3f} / {teacher['val_accuracy']:.3f}",
                     f"{teacher['train_s']:.0f} / {teacher['steps']}",
                     f"{teacher['s_per_step']:.2f}"))
    rows += [("", "", "", ""), ("arm", "ER / PD / OER", "train s / steps", "s per step")]
    for name, arm in figures["arms"].items():
        gain = figures["gains"].get(name)
        rows.append((name, f"{arm['er_map']:.1f} / {arm['pd_ap']:.1f} / {arm['oer_map']:.1f}",
                     f"{arm['train_s']:.0f} / {arm['steps']}",
                     f"{arm['s_per_step']:.2f}" + ("" if gain is None
                                                   else f"   ER {gain:+.1f} vs baseline")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--budget-minutes", type=float, default=5.0,
                        help="training time per arm, minutes (default 5)")
    parser.add_argument("--teacher-minutes", type=float, default=2.5,
                        help="training time per teacher, minutes (default 2.5)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_amalgamation",
                        help="folder for the data, the teachers, the run folders and the model "
                             "files (default runs/bench_amalgamation; its data/, teachers/ and "
                             "runs/ are replaced)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--images", type=int, default=1400, help="student scenes in all")
    parser.add_argument("--teacher-images", type=int, default=800,
                        help="teacher scenes (one background and one face per person each)")
    parser.add_argument("--size", type=int, default=128, help="synthetic image side, pixels")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the student's training config")
    parser.add_argument("--ka-channels", type=int, default=32,
                        help="C, the amalgamation's common space width (default 32; a "
                             "multiple of the number of teachers)")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"comma-separated arms (default {','.join(DEFAULT_ARMS)}; also "
                             f"finetune_context, ka_context)")
    parser.add_argument("--checkpoint", choices=("final", "best"), default="final",
                        help="the trainer's model file evaluated (default final)")
    parser.add_argument("--extraction", choices=("center", "box_mean"), default="center",
                        help="how the evaluated model files read the emotion maps")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; 0: torch's default, one per core; see "
                             "the module docstring)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 40 images of 64 px, seconds of training per teacher "
                             "and arm (figures meaningless)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="training-config overrides for every arm, e.g. optim.lr=2e-3")
    args = parser.parse_args(argv)
    args.arms = list(dict.fromkeys(a for a in args.arms.split(",") if a))
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown or not args.arms:
        parser.error(f"--arms: unknown {unknown}; known: {','.join(ARMS)}")
    args.teacher_overrides = []
    if args.quick:
        args.images, args.teacher_images, args.size = 40, 40, 64
        args.budget_minutes, args.teacher_minutes = 0.05, 0.03
        args.overrides = ["batch_size=4", "val_every=1000", "model.input_size=[64, 64]",
                          "calibrate=false", *args.overrides]
        args.teacher_overrides = ["batch_size=8"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    input_side = max(config.model.input_size)
    if any(side % 32 for side in config.model.input_size):
        raise SystemExit(f"the student's input size {list(config.model.input_size)} must be "
                         f"multiples of 32 (the context teacher is trained at it)")
    for folder in ("data", "teachers", "runs"):
        if (args.out / folder).exists():
            shutil.rmtree(args.out / folder)
    print(f"[data] {args.images} student scenes and {args.teacher_images} teacher scenes of "
          f"{args.size} px -> {args.out / 'data'}", flush=True)
    student = args.out / "data" / "student"
    generate(student, args.images, args.seed, args.size)
    teacher_data = make_teacher_data(args.out / "data" / "teachers", args.teacher_images,
                                     args.seed, args.size, input_side)
    needed = {t for arm in args.arms for t in (ARMS[arm][0], *ARMS[arm][1]) if t}
    teachers = {name: run_teacher(name, teacher_data[name], input_side, args)
                for name in TEACHER_CLASSES if name in needed}
    arms = {arm: run_arm(arm, student, teachers, args) for arm in args.arms}
    figures: dict[str, object] = {
        "machine": machine(), "command": " ".join(sys.argv), "quick": args.quick,
        "seed": args.seed, "budget_minutes": args.budget_minutes,
        "teacher_minutes": args.teacher_minutes, "ka_channels": args.ka_channels,
        "checkpoint": args.checkpoint, "extraction": args.extraction,
        "config_file": str(args.config), "teacher_config_file": str(TEACHER_CONFIG),
        "overrides": list(args.overrides),
        "config": next(iter(arms.values()))["config"],
        "data": {"images": args.images, "teacher_images": args.teacher_images,
                 "size": args.size, "student": str(student),
                 "face_input": FACE_INPUT},
        "teachers": teachers,
        "arms": {name: {k: v for k, v in arm.items() if k != "config"}
                 for name, arm in arms.items()},
    }
    figures.update(summary(arms, teachers))
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
