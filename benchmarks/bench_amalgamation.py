"""Knowledge amalgamation benchmark: does KA beat its baseline, and fine-tuning? (issue 17)

The KA paper's comparison (papers/knowledge-amalgamation-single-shot-caer.txt, Tables 3-6:
baseline, F-T of a teacher, KA with one and with two teachers) rerun on 2 CPU cores with
teachers trained here on synthetic sub-tasks, under the paper's protocol as far as these
machines allow. One run:

1. **Student data**: the synthetic CAER set (:func:`training.datasets.synthetic.generate`,
   EMOTIC format, train / val / test 70/15/15) of ``--images`` scenes of ``--size`` px. Its
   labels need the face, the pose and the context.
2. **Teacher data**: ``--teacher-images`` other scenes per teacher from separate random streams
   (never the student's images), JPEG-encoded like the student's:

   - ``face`` (the FER teacher's role): whole scenes like the student's in the EMOTIC format
     (train / val / test 70/15/15) where each person is annotated by a **head box** (a square
     around the head, :func:`head_box`) labelled with the emotion its face alone shows
     (:data:`FER`: smile -> Happiness, frown -> Sadness, open -> Surprise): a face set, as a
     FER teacher's data are faces, with the faces at the size and in the surroundings they
     have in the student's images; and ``face_crops``, the squares of :data:`FACE_CROP` px
     of the student's input around those head boxes, folder-per-class ``smile`` / ``frown`` /
     ``open`` (the face set's train and val splits);
   - ``context`` (the VEA teacher's role, the scene's mood), folder-per-class
     (``root/<train|val>/<class>/*.png``, 85/15 by scene): the background alone
     (:func:`~training.datasets.synthetic.draw_context` on an empty canvas), ``party`` /
     ``night`` / ``park``, at the student's input size;
   - ``generic`` (the ImageNet checkpoint's role): whole scenes at the student's input size,
     labelled with the number of people in them (``one`` .. ``four``): visual knowledge of
     these images with no emotion in its labels.
3. **Teachers**, ``best.pt`` (best validation score) kept:

   - ``generic``: :func:`training.train_teacher.train_teacher` with
     ``training/configs/teacher_synthetic_face.yaml`` (the ``hrnet_cpu`` backbone, the student's
     architecture; classifier head), ``--teacher-minutes``;
   - ``face_crops``: the same classifier on :data:`FACE_CROP` px crops of the face set's head
     boxes (the faces at the size they have in the student's input), ``--teacher-minutes``: the
     FER teacher's own pretraining. Alone it knows faces on its crops only (validation F1
     about 1.0, probe on the scenes about 0.35);
   - ``face``: a BENet (:class:`training.train.Trainer`, the student's config with the bottom-up
     task alone) started from the face-crop classifier and trained on the face set for
     ``--face-minutes``: a dense per-head target (the emotion maps inside each head box,
     box-mean reading), so its features carry the face where the student's scenes show it.
     Its validation score is its ER mAP on the three FER categories. Measured while building
     this: the same BENet started from the generic teacher stayed at chance after 2.5 minutes
     (val ER mAP 0.36), as did a classifier of 64 px scene windows around the heads (macro F1
     0.31); started from the crop classifier it leaves chance after about 200 steps and
     reaches 0.91 after 715 (8 minutes; its probe: 0.785);
   - ``context``: as ``generic``, on the backgrounds.
4. **Probes** (:mod:`training.teachers.probe`), before any arm: each teacher's features on the
   student's own training scenes, a linear probe fitted on 70% of the people and scored on the
   rest. The face, face-crop and generic teachers are probed on each person's face class from the
   head region (the top quarter of the box), the context teacher on the scene's context from the
   box. The face teacher's accuracy is ``teacher_probe`` (the KA arms are only worth reading
   when it is high); the generic teacher's face probe is the control: what features that
   were never taught faces give.
5. **Arms**, each for exactly ``--steps`` optimiser steps (``max_steps``) and for each of
   ``--seeds`` (training seed: initialisation of what is not loaded, batch order,
   augmentation; the data and the teachers are the same), config
   ``training/configs/bench_amalgamation.yaml``: the paper's losses and reading (BCE, eq. 1,
   box-mean reading with the in-box variance, eq. 3; box-mean extraction in the model files):

   - ``baseline``: the backbone starts from the generic teacher (the paper's ImageNet start);
   - ``finetune``: the backbone starts from the face teacher (the paper's F-T column);
   - ``ka_1``: generic start, knowledge amalgamation (:mod:`training.objectives.amalgamation`, eq.
     7-9) from the face teacher;
   - ``ka_2``: the same from the face and the context teachers;
   - optional: ``ka_placebo`` (KA from the generic teacher: the KA machinery with no emotion
     knowledge behind it), ``finetune_context``, ``ka_context``.

   The common space has ``--ka-channels`` channels (C, default 32 instead of the paper's 96:
   the student's 1/4 branch has 16 channels here, HRNet-W32's 32; at C = 96 a KA step costs
   6-10 baseline steps on CPU). Every arm keeps ``best.pt`` by its validation ER mAP
   (``best_by: metric``: one rule for arms whose losses differ; the paper's lowest total
   validation loss would rank the KA arms by their KA terms too), evaluated on the held-out
   test split with :func:`training.evaluation.evaluate.evaluate` through the node's
   :class:`~caer_ros.inference.predictor.Predictor` (``er_map``, ``pd_ap``, ``oer_map``, x100).

**Equal time beside equal steps.** A KA step costs more than a baseline step (the teachers'
forward passes, the amalgamation module). Next to the equal-steps test figures, each arm's
best *validation* ER mAP among the validations it had reached within the baseline's training
time (same seed) is ``val_er_map_equal_time_<arm>``; its best over the whole run is
``val_er_map_<arm>``; each arm's seconds per step are reported.

Figures (x100, mean over seeds and ``*_std`` the sample standard deviation):
``er_map_baseline``, ``er_map_finetune``, ``er_map_ka_1``, ``er_map_ka_2``; paired over seeds
(same seed's runs subtracted, then mean and spread): ``ka_gain`` (KA-1 minus baseline),
``ka2_minus_ka1``, ``ka_minus_ft`` (the KA arm with the better *validation* ER mAP minus
F-T: the choice is made on validation, the difference read on test); ``teacher_probe`` (face
teacher's probe accuracy, 0..1) and every probe beside its chance level; ``collapse_ratio`` (the
worst KA run's eq. 7 loss over its value for zero student features at the end of training).
``targets`` and ``targets_met``: ``ka_gain >= 3``, ``ka2_minus_ka1 >= 0``,
``collapse_ratio <= 0.5``, ``teacher_probe >= 0.8`` (issue 17); the two paired differences
count as met only when their mean minus their paired standard deviation clears the bound. KA
against F-T is a finding, not a target.

Usage::

    python benchmarks/bench_amalgamation.py [--json PATH] [--steps 250] [--seeds 0,1,2]
        [--teacher-minutes 2.5] [--face-minutes 8] [--out DIR] [--data-seed 0]
        [--images 1400] [--size 128] [--teacher-images 800] [--ka-channels 32]
        [--arms baseline,finetune,ka_1,ka_2]
        [--threads 1] [--quick] [key=value ...]

Threads: one torch thread by default (``--threads 0``: torch's default). ``key=value`` are
training-config overrides for every arm. ``--quick`` is a smoke run (40 images of 64 px, a
few seconds per teacher, 2 steps per arm, one seed): it checks the whole path, its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

import bench_learn as learn
import cv2
import numpy as np
import torch
from common import machine, mean_std, paired, write_json

from caer_ros.inference.preprocess import PAD_RGB
from training.config import load_config
from training.datasets.emotic import load_emotic
from training.datasets.records import ImageRecord
from training.datasets.synthetic import (
    CONTEXTS,
    FACES,
    FOLDER,
    SceneTruth,
    draw_context,
    generate,
    render_scene,
    write_emotic_labels,
)
from training.teachers.models import load_teacher
from training.teachers.probe import person_features, probe
from training.train import Trainer
from training.train_teacher import load_teacher_config, train_teacher

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "training" / "configs" / "bench_amalgamation.yaml"
TEACHER_CONFIG = REPO / "training" / "configs" / "teacher_synthetic_face.yaml"
COUNTS = ("one", "two", "three", "four")  # render_scene draws 1-4 people
# the classifier teachers
TEACHER_CLASSES = {"context": CONTEXTS, "generic": COUNTS, "face_crops": FACES}
FER = {"smile": "Happiness", "frown": "Sadness", "open": "Surprise"}  # the face teacher's labels
# training order: the face teacher starts from the face-crop classifier
TEACHERS = ("generic", "face_crops", "face", "context")
# Arm -> (teacher whose backbone starts the student, teachers amalgamated)
ARMS = {"baseline": ("generic", ()), "finetune": ("face", ()),
        "ka_1": ("generic", ("face",)), "ka_2": ("generic", ("face", "context")),
        "ka_placebo": ("generic", ("generic",)), "finetune_context": ("context", ()),
        "ka_context": ("generic", ("context",))}
DEFAULT_ARMS = ("baseline", "finetune", "ka_1", "ka_2")
KA_ARMS = ("ka_1", "ka_2")  # the arms ka_minus_ft picks the better of
FACE_CROP = 32  # face-crop classifier input side = crop side in student-input pixels
HEAD_CENTRE, HEAD_HALF = 0.35, 0.35  # head square: centre and half side, figure scales
TEACHER_VAL = 0.15  # share of the teacher scenes in the teachers' validation sets
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]  # as the generator writes the student's images
PROBE_IMAGES = 300  # student training scenes each teacher is probed on
# What each teacher is probed on: (label of a person, the feature region)
PROBES = {"face": ("face", "head"), "context": ("context", "box"), "generic": ("face", "head"),
          "face_crops": ("face", "head")}
TARGETS = {"ka_gain": (">=", 3.0), "ka2_minus_ka1": (">=", 0.0),
           "collapse_ratio": ("<=", 0.5), "teacher_probe": (">=", 0.8)}
# Paired differences over seeds: met only when mean - std (one paired standard deviation)
# clears the bound, not by a mean that chance puts on either side half the time.
PAIRED_TARGETS = ("ka_gain", "ka2_minus_ka1")


# --------------------------------------------------------------------------- teacher data


def jpeg(image: np.ndarray) -> np.ndarray:
    """``image`` after a JPEG round trip at the student images' quality."""
    return cv2.imdecode(cv2.imencode(".jpg", image, JPEG)[1], cv2.IMREAD_COLOR)


def head_box(box: tuple[float, float, float, float], unit: float
             ) -> tuple[float, float, float, float]:
    """The square around the head of the figure in ``box`` (``unit``: the box height of a
    figure of scale 1): :func:`~training.datasets.synthetic.draw_person` draws the head as a
    circle of radius 0.3 s centred 0.35 s below the figure's top; the square's half side is
    :data:`HEAD_HALF` s."""
    x1, y1, x2, y2 = box
    s = (y2 - y1) / unit
    cx, cy = (x1 + x2) / 2, y1 + HEAD_CENTRE * s
    return (cx - HEAD_HALF * s, cy - HEAD_HALF * s, cx + HEAD_HALF * s, cy + HEAD_HALF * s)


def crop(image: np.ndarray, centre: tuple[float, float], side: int) -> np.ndarray:
    """The ``side`` x ``side`` square of ``image`` centred on ``centre`` (x, y), the pad colour
    where it leaves the image."""
    c0, r0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_CONSTANT,
                                value=tuple(int(c) for c in PAD_RGB[::-1]))
    return padded[r0 + side:r0 + 2 * side, c0 + side:c0 + 2 * side]


def make_teacher_data(root: Path, scenes: int, seed: int, size: int, input_side: int
                      ) -> dict[str, dict[str, object]]:
    """Write the face, face-crop, context and generic sets under ``root/<teacher>`` (module
    docstring) from ``scenes`` scenes of ``size`` px each, drawn from ``default_rng([seed, 1])``
    (the face set and its crops) and ``default_rng([seed, 2])`` (the others);
    ``input_side``: the student's input side. Returns per teacher its folder and image
    counts."""
    truth = generate(root / "face", scenes, [seed, 1], size)
    unit = learn.figure_scale()
    write_emotic_labels(root / "face", {
        split: [dataclasses.replace(scene, people=[
            dataclasses.replace(person, box=head_box(person.box, unit),
                                categories=(FER[person.face],))
            for person in scene.people]) for scene in scenes_of]
        for split, scenes_of in truth.items()})
    face_counts = {split: {name: sum(p.face == face for s in of for p in s.people)
                           for face, name in FER.items()} for split, of in truth.items()}
    side = max(1, round(FACE_CROP * size / input_side))  # FACE_CROP px once letterboxed
    crop_counts = {split: dict.fromkeys(FACES, 0) for split in ("train", "val")}
    for split in crop_counts:
        for label in FACES:
            (root / "face_crops" / split / label).mkdir(parents=True, exist_ok=True)
        for scene in truth[split]:
            image = cv2.imread(str(root / "face" / "emotic" / FOLDER / scene.filename))
            for j, person in enumerate(scene.people):
                x1, y1, x2, y2 = head_box(person.box, unit)
                window = crop(image, ((x1 + x2) / 2, (y1 + y2) / 2), side)
                if side != FACE_CROP:
                    window = cv2.resize(window, (FACE_CROP, FACE_CROP),
                                        interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(root / "face_crops" / split / person.face /
                                f"{Path(scene.filename).stem}_{j}.png"), window)
                crop_counts[split][person.face] += 1
    rng = np.random.default_rng([seed, 2])
    counts = {name: {split: dict.fromkeys(classes, 0) for split in ("train", "val")}
              for name, classes in TEACHER_CLASSES.items()}
    for name, classes in TEACHER_CLASSES.items():
        for split in ("train", "val"):
            for label in classes:
                (root / name / split / label).mkdir(parents=True, exist_ok=True)
    first_val = scenes - max(1, round(TEACHER_VAL * scenes))

    def write(name: str, split: str, label: str, stem: str, image: np.ndarray) -> None:
        cv2.imwrite(str(root / name / split / label / f"{stem}.png"), image)
        counts[name][split][label] += 1

    for i in range(scenes):
        split = "train" if i < first_val else "val"
        image, people, context = render_scene(rng, size)
        write("generic", split, COUNTS[len(people) - 1], f"{i:05d}", jpeg(image))
        background = np.zeros((size, size, 3), np.uint8)
        draw_context(background, context, rng)
        write("context", split, context, f"{i:05d}", jpeg(background))
    return {"face": {"root": str(root / "face"), "images": face_counts},
            "face_crops": {"root": str(root / "face_crops"), "images": crop_counts},
            **{name: {"root": str(root / name), "images": counts[name]} for name in counts}}


# --------------------------------------------------------------------------- teachers


def run_teacher(name: str, data: dict[str, object], input_side: int,
                args: argparse.Namespace, teachers: dict[str, dict[str, object]]
                ) -> dict[str, object]:
    """Train one teacher for ``--teacher-minutes``; its best validation epoch's figures
    (``val_score``: macro F1 for the classifiers, ER mAP on the FER categories for the face
    teacher, 0..1)."""
    if name == "face":
        return run_face_teacher(data, args, teachers["face_crops"]["model"])
    out = args.out / "teachers" / name
    side = FACE_CROP if name == "face_crops" else input_side
    overrides = [f"name=synthetic_{name}", f"classes={json.dumps(list(TEACHER_CLASSES[name]))}",
                 f"input_size=[{side}, {side}]", f"out={out}",
                 f"seed={args.data_seed}", f"budget_minutes={args.teacher_minutes}",
                 "epochs=1000", "workers=0", *args.teacher_overrides]
    config = load_teacher_config(TEACHER_CONFIG, overrides, data["root"])
    print(f"[teacher {name}] {side} px, budget {args.teacher_minutes:g} min -> {out}",
          flush=True)
    started = time.perf_counter()
    history = train_teacher(config, progress=args.progress)
    best = max(history, key=lambda record: record["val"]["macro_f1"])
    steps = sum(record["steps"] for record in history)
    train_s = history[-1]["elapsed_s"]
    return {
        "kind": "classifier", "val_metric": "macro_f1",
        "val_score": round(best["val"]["macro_f1"], 4),
        "val_accuracy": round(best["val"]["accuracy"], 4),
        "best_epoch": best["epoch"], "epochs": len(history), "steps": steps,
        "train_s": train_s, "s_per_step": round(train_s / max(1, steps), 3),
        "wall_s": round(time.perf_counter() - started, 1),
        "images": data["images"], "data": data["root"], "model": str(out / "best.pt"),
    }


def run_face_teacher(data: dict[str, object], args: argparse.Namespace, init: str
                     ) -> dict[str, object]:
    """The face teacher: a BENet with the bottom-up task alone on the face set (module
    docstring, 3), started from ``init``, for ``--teacher-minutes``."""
    out = args.out / "teachers" / "face"
    config = load_config(args.config, [
        *args.overrides, "tasks=[bu]", "routes={raw: [bu]}", f"init_backbone={json.dumps(init)}",
        f"out={out}", f"seed={args.data_seed}", f"budget_minutes={args.face_minutes}",
        "calibrate=false", "best_by=metric"], data["root"])
    print(f"[teacher face] BENet, bu task, budget {args.face_minutes:g} min -> {out}",
          flush=True)
    started = time.perf_counter()
    trainer = Trainer(config, restart=True, progress=args.progress)
    history = learn.validations(trainer.run())
    best = max(history, key=lambda v: v["val_metrics"].get("emotic", -1.0))
    state = trainer.state
    return {
        "kind": "benet", "val_metric": "er_map (FER categories)",
        "val_score": round(best["val_metrics"].get("emotic", float("nan")), 4),
        "best_step": best["steps"], "steps": state.global_step, "train_s": state.elapsed_s,
        "s_per_step": round(state.elapsed_s / max(1, state.global_step), 3),
        "wall_s": round(time.perf_counter() - started, 1),
        "images": data["images"], "data": data["root"], "model": str(out / "best.pt"),
    }


# --------------------------------------------------------------------------- probes


def relabelled(records: list[ImageRecord], truth: list[SceneTruth], factor: str
               ) -> list[ImageRecord]:
    """``records`` with each person's labels replaced by the one-hot of its ``factor`` (``face``
    or ``context``) from the generator's ``truth``, matched by file name and box."""
    by_name = {scene.filename: scene for scene in truth}
    classes = FACES if factor == "face" else CONTEXTS
    out = []
    for record in records:
        scene = by_name[record.path.name]
        people = []
        for person in record.people:
            drawn = min(scene.people, key=lambda p: float(np.abs(np.subtract(p.box,
                                                                             person.box)).sum()))
            value = drawn.face if factor == "face" else scene.context
            onehot = np.eye(len(classes), dtype=np.float32)[classes.index(value)]
            people.append(dataclasses.replace(person, categories=onehot))
        out.append(dataclasses.replace(record, people=people))
    return out


def probe_teachers(teachers: dict[str, dict[str, object]], data: Path,
                   truth: list[SceneTruth], input_size: tuple[int, int]
                   ) -> dict[str, dict[str, object]]:
    """Each teacher's linear probe on the student's training scenes (module docstring, 4)."""
    records, _ = load_emotic(data, "train")
    records = [r for r in records if r.people][:PROBE_IMAGES]
    out = {}
    for name, teacher in teachers.items():
        factor, region = PROBES[name]
        extractor = load_teacher(teacher["model"])
        features, labels, images = person_features(extractor,
                                                   relabelled(records, truth, factor),
                                                   input_size, region)
        result = probe(features, labels, single_label=True, name=name, images=images)
        print(f"[probe] {result.line()} ({factor}, {region} region)", flush=True)
        out[name] = {"label": factor, "region": region, "metric": result.metric,
                     "score": round(result.score, 4), "chance": round(result.chance, 4),
                     "people": result.people, "carries_little": result.carries_little}
    return out


# --------------------------------------------------------------------------- arms


def arm_overrides(arm: str, teachers: dict[str, dict[str, object]],
                  args: argparse.Namespace) -> list[str]:
    """The training-config overrides that make ``arm`` (:data:`ARMS`)."""
    init, amalgamated = ARMS[arm]
    overrides = [f"init_backbone={json.dumps(teachers[init]['model'])}"]
    if amalgamated:
        files = [teachers[name]["model"] for name in amalgamated]
        overrides += [f"amalgamation.teachers={json.dumps(files)}",
                      f"amalgamation.channels={args.ka_channels}",
                      "amalgamation.probe_images=0"]  # probed once, above, on the true factors
    return overrides


def run_arm(arm: str, seed: int, data: Path, teachers: dict[str, dict[str, object]],
            args: argparse.Namespace) -> dict[str, object]:
    """Train one arm for ``--steps`` steps with training seed ``seed``; evaluate its best.pt
    (:func:`bench_learn.run_arm`, with the arm's overrides)."""
    extra = arm_overrides(arm, teachers, args)
    arm_args = argparse.Namespace(**{
        **vars(args), "seed": seed, "budget_minutes": None,
        "overrides": [*args.overrides, f"max_steps={args.steps}", *extra]})
    return {**learn.run_arm(f"{arm}/seed{seed}", data, arm_args), "arm_overrides": extra}


# --------------------------------------------------------------------------- report


def best_val(run: dict[str, object], within_s: float | None = None) -> float | None:
    """A run's best validation ER mAP (x100), over the validations reached within
    ``within_s`` seconds of training (all of them when None)."""
    values = [v["val_metrics"]["emotic"] for v in run["validations"]
              if "emotic" in v["val_metrics"] and (within_s is None
                                                   or v["elapsed_s"] <= within_s)]
    return round(100 * max(values), 2) if values else None


def summary(runs: dict[str, dict[int, dict[str, object]]],
            probes: dict[str, dict[str, object]]) -> dict[str, object]:
    """The headline figures (module docstring): per arm the means and spreads, the paired
    differences, the ingredient checks and the targets."""
    out: dict[str, object] = {}
    for arm, by_seed in runs.items():
        for run in by_seed.values():
            base = runs.get("baseline", {}).get(run["seed"])
            run["val_er_map"] = best_val(run)
            run["val_er_map_equal_time"] = best_val(run, base["train_s"] if base else None)
        for key in ("er_map", "pd_ap", "oer_map", "val_er_map", "val_er_map_equal_time",
                    "s_per_step", "steps"):
            out[f"{key}_{arm}"], out[f"{key}_{arm}_std"] = mean_std(
                [run[key] for run in by_seed.values()])
    if "baseline" in runs:
        out["gains"] = {arm: dict(zip(("mean", "std"), paired(runs, arm, "er_map", "baseline"),
                                      strict=True)) for arm in runs if arm != "baseline"}
        out["ka_gain"], out["ka_gain_std"] = paired(runs, "ka_1", "er_map", "baseline") \
            if "ka_1" in runs else (None, None)
    if {"ka_1", "ka_2"} <= set(runs):
        out["ka2_minus_ka1"], out["ka2_minus_ka1_std"] = paired(runs, "ka_2", "er_map", "ka_1")
    ka = [arm for arm in KA_ARMS if arm in runs]
    if ka and "finetune" in runs:  # the better KA arm by its validation ER mAP, never the test
        better = max(ka, key=lambda arm: -math.inf if out[f"val_er_map_{arm}"] is None
                     else out[f"val_er_map_{arm}"])
        out["ka_minus_ft"], out["ka_minus_ft_std"] = paired(runs, better, "er_map", "finetune")
        out["ka_minus_ft_arm"] = better
    ratios = [run["collapse_ratio"] for arm in runs if ARMS[arm][1]
              for run in runs[arm].values() if run.get("collapse_ratio") is not None]
    out["collapse_ratio"] = max(ratios) if ratios else None
    out["teacher_probe"] = probes.get("face", {}).get("score")
    out["teacher_probes"] = probes
    met = {}
    for key, (sign, bound) in TARGETS.items():
        value = out.get(key)
        if value is not None and key in PAIRED_TARGETS:  # met only when the spread allows
            spread = out.get(f"{key}_std") or 0.0
            value = value - spread if sign == ">=" else value + spread
        met[key] = value is not None and (value >= bound if sign == ">=" else value <= bound)
    out["targets"] = {key: f"{sign} {bound:g}" for key, (sign, bound) in TARGETS.items()}
    out["targets_met"] = met
    return out


def table(figures: dict[str, object]) -> str:
    """Teachers and their probes, then the arms: test ER / PD / OER, validation ER mAP at equal
    steps and at equal time, seconds per step, the gain over the baseline."""
    rows = [("teacher", "val score", "probe on student scenes", "s per step")]
    for name, teacher in figures["teachers"].items():
        p = figures["teacher_probes"].get(name, {})
        rows.append((name, f"{teacher['val_score']:.3f} {teacher['val_metric'].split()[0]}",
                     f"{p.get('label')} {p.get('score', 0):.3f} (chance "
                     f"{p.get('chance', 0):.3f})", f"{teacher['s_per_step']:.2f}"))
    rows += [("", "", "", ""), ("arm (mean ± std)", "test ER / PD / OER",
                                "val ER equal steps / equal time", "s per step, gain")]
    for arm in figures["arms"]:
        def f(key: str, arm: str = arm) -> str:
            value, std = figures.get(f"{key}_{arm}"), figures.get(f"{key}_{arm}_std")
            return "-" if value is None else f"{value:.1f}±{std:.1f}"
        gain = figures.get("gains", {}).get(arm)
        rows.append((arm, f"{f('er_map')} / {f('pd_ap')} / {f('oer_map')}",
                     f"{f('val_er_map')} / {f('val_er_map_equal_time')}",
                     f"{figures[f's_per_step_{arm}']:.2f}" + (
                         "" if gain is None or gain["mean"] is None
                         else f"   ER {gain['mean']:+.1f}±{gain['std']:.1f}")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for key in TARGETS:
        lines.append(f"{key}: {figures.get(key)} (target {figures['targets'][key]}, "
                     f"{'met' if figures['targets_met'][key] else 'not met'})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--steps", type=int, default=250,
                        help="optimiser steps per arm and seed (default 250)")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--teacher-minutes", type=float, default=2.5,
                        help="training time of each classifier teacher, minutes (default 2.5)")
    parser.add_argument("--face-minutes", type=float, default=8.0,
                        help="training time of the face teacher (the BENet on head boxes), "
                             "minutes (default 8)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_amalgamation",
                        help="folder for the data, the teachers, the run folders and the model "
                             "files (default runs/bench_amalgamation; its data/, teachers/ and "
                             "runs/ are replaced)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the data and the teachers (default 0)")
    parser.add_argument("--images", type=int, default=1400, help="student scenes in all")
    parser.add_argument("--teacher-images", type=int, default=800,
                        help="scenes per teacher (default 800)")
    parser.add_argument("--size", type=int, default=128, help="synthetic image side, pixels")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the student's training config")
    parser.add_argument("--ka-channels", type=int, default=32,
                        help="C, the amalgamation's common space width (default 32; a "
                             "multiple of the number of teachers)")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"comma-separated arms (default {','.join(DEFAULT_ARMS)}; also "
                             f"{','.join(a for a in ARMS if a not in DEFAULT_ARMS)})")
    parser.add_argument("--checkpoint", choices=("final", "best"), default="best",
                        help="the trainer's model file evaluated (default best: the best "
                             "validation ER mAP)")
    parser.add_argument("--extraction", choices=("center", "box_mean"), default="box_mean",
                        help="how the evaluated model files read the emotion maps (default "
                             "box_mean, the KA paper's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; 0: torch's default, one per core)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 40 images of 64 px, seconds of training per teacher, "
                             "2 steps per arm, one seed (figures meaningless)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="training-config overrides for every arm, e.g. optim.lr=2e-3")
    args = parser.parse_args(argv)
    args.arms = list(dict.fromkeys(a for a in args.arms.split(",") if a))
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown or not args.arms:
        parser.error(f"--arms: unknown {unknown}; known: {','.join(ARMS)}")
    try:
        args.seeds = list(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if not args.seeds or args.steps < 1:
        parser.error("need at least one seed and --steps >= 1")
    args.teacher_overrides = []
    if args.quick:
        args.images, args.teacher_images, args.size = 40, 40, 64
        args.steps, args.seeds, args.teacher_minutes = 2, args.seeds[:1], 0.03
        args.face_minutes = 0.03
        args.overrides = ["batch_size=4", "model.input_size=[64, 64]", "calibrate=false",
                          *args.overrides]
        args.teacher_overrides = ["batch_size=8"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    input_size = config.model.input_size
    input_side = max(input_size)
    if any(side % 32 for side in input_size):
        raise SystemExit(f"the student's input size {list(input_size)} must be multiples of 32 "
                         f"(the context and generic teachers are trained at it)")
    for folder in ("data", "teachers", "runs"):
        if (args.out / folder).exists():
            shutil.rmtree(args.out / folder)
    print(f"[data] {args.images} student scenes and {args.teacher_images} teacher scenes of "
          f"{args.size} px -> {args.out / 'data'}", flush=True)
    student = args.out / "data" / "student"
    truth = generate(student, args.images, args.data_seed, args.size)
    teacher_data = make_teacher_data(args.out / "data" / "teachers", args.teacher_images,
                                     args.data_seed, args.size, input_side)
    needed = {t for arm in args.arms for t in (ARMS[arm][0], *ARMS[arm][1])} | {
        "face", "face_crops", "generic"}
    teachers: dict[str, dict[str, object]] = {}
    for name in TEACHERS:
        if name in needed:
            teachers[name] = run_teacher(name, teacher_data[name], input_side, args, teachers)
    probes = probe_teachers(teachers, student, truth["train"], input_size)
    runs = {arm: {seed: {**run_arm(arm, seed, student, teachers, args), "seed": seed}
                  for seed in args.seeds} for arm in args.arms}
    figures: dict[str, object] = {
        "machine": machine(), "command": " ".join(sys.argv), "quick": args.quick,
        "steps": args.steps, "seeds": args.seeds, "data_seed": args.data_seed,
        "teacher_minutes": args.teacher_minutes, "face_minutes": args.face_minutes,
        "ka_channels": args.ka_channels,
        "checkpoint": args.checkpoint, "extraction": args.extraction,
        "config_file": str(args.config), "teacher_config_file": str(TEACHER_CONFIG),
        "overrides": list(args.overrides),
        "config": next(iter(runs[args.arms[0]].values()))["config"],
        "data": {"images": args.images, "teacher_images": args.teacher_images,
                 "size": args.size, "student": str(student), "fer_labels": FER},
        "teachers": teachers,
    }
    figures.update(summary(runs, probes))
    figures["arms"] = {arm: {str(seed): {k: v for k, v in run.items() if k != "config"}
                             for seed, run in by_seed.items()} for arm, by_seed in runs.items()}
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
