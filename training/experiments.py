"""Building blocks of the benchmarks that train runs and compare them (``benchmarks/``): a
placebo's data, one run, an arm trained and tested, teachers trained and probed, one model
file's figures. The benchmarks say which arms run with which settings and print the figures;
what a run, a teacher or a figure is lives here, where the tests import it.

- :func:`shuffled_label_copy`: a copy of a synthetic EMOTIC set
  (:func:`training.datasets.synthetic.generate`) whose people's labels (EMOTIC categories, HECO
  category and valence / arousal / dominance, one person's together) are permuted across the
  people of each split named; the images, the people and their boxes stay. Pretrained on it, a
  model learns what the real set teaches except which person shows which emotion: a placebo
  of emotion knowledge that keeps the detection task and the images;
- :func:`same_start`: the overrides that give a training config a model file's architecture and
  inference settings, as ``init_from`` does (:mod:`training.config`), without its weights: a
  run from scratch built exactly like the fine-tuning run it is compared with;
- :func:`train_run`: one run of :class:`training.train.Trainer` from a config file and
  overrides; its steps, training time, validations and the step ``best.pt`` was kept at;
- :func:`distill_run`: one label-free distillation run (:mod:`training.distill`), as
  :func:`train_run` reports a training run; :func:`student_overrides`: a student preset as a
  training config's model section (the supervised student trained beside it);
- :func:`init_check`: what ``init_from`` loads of a model file into a config's model, without
  training (:class:`training.finetune.InitReport` in numbers);
- :func:`split_images_folder`: a folder of one split's images (links), e.g. the training
  split alone for an int8 calibration that must not see the test images;
- :func:`arm_run`: one arm of a compared set (:class:`ArmSetup`: config, overrides, seed,
  budget or steps, extraction, the model file kept) trained and its model file evaluated on the
  data's EMOTIC test split, in the figures the learnability and KA benchmarks report;
  :func:`validations`: a run's validations; :func:`check_model`: a model file loaded as the
  node loads it and run on a test image;
- :func:`classifier_teacher_run`, :func:`benet_teacher_run`: a teacher trained
  (:func:`training.train_teacher.train_teacher`, or a BENet through
  :class:`training.train.Trainer`) and its best validation's figures; :func:`probe_teachers`:
  each teacher's linear probe (:mod:`training.teachers.probe`) on a synthetic set's training
  scenes relabelled with a factor of the ground truth;
- :func:`untrained_model_file`: an untrained BENet with person-sized boxes saved as a model
  file, for speed figures (speed does not depend on the weights);
- :func:`split_records`, :func:`model_figures`, :func:`chance_er_map`: a test split's records,
  a model file's figures on them through the node's predictor
  (:func:`training.evaluation.evaluate.evaluate`) and the ER mAP of constant scores on them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets.coco import EmotionSet
from training.datasets.records import ImageRecord
from training.datasets.splits import HecoSplit, load_split
from training.datasets.synthetic import FOLDER, SceneTruth, write_emotic_labels
from training.datasets.synthetic_variants import relabelled

# --------------------------------------------------------------------------- data


def shuffled_label_copy(source: str | Path, target: str | Path,
                        truth: dict[str, list[SceneTruth]], seed: int,
                        splits: Sequence[str] = ("train", "val")
                        ) -> dict[str, list[SceneTruth]]:
    """Copy the synthetic EMOTIC set ``source`` (its ground truth ``truth``, as
    :func:`~training.datasets.synthetic.generate` returned it) to ``target`` with the labels of
    the people of each split in ``splits`` permuted across that split's people (module
    docstring; ``seed`` draws the permutations); the other splits are copied as they are.
    Returns the ground truth written (a person keeps its box, face and pose, and takes
    another's labels)."""
    source, target = Path(source), Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source / "emotic" / FOLDER, target / "emotic" / FOLDER)
    rng = np.random.default_rng([seed, 11])
    out: dict[str, list[SceneTruth]] = {}
    for split, scenes in truth.items():
        if split not in splits:
            out[split] = scenes
            continue
        people = [p for s in scenes for p in s.people]
        order = rng.permutation(len(people))
        donors = iter(people[i] for i in order)
        out[split] = [dataclasses.replace(scene, people=[
            dataclasses.replace(p, categories=d.categories, heco_category=d.heco_category,
                                continuous=d.continuous)
            for p, d in zip(scene.people, donors, strict=False)]) for scene in scenes]
    write_emotic_labels(target, out)
    return out


def changed_fraction(original: dict[str, list[SceneTruth]],
                     shuffled: dict[str, list[SceneTruth]], split: str = "train") -> float:
    """The share of ``split``'s people whose EMOTIC categories differ between the two (how much
    a shuffle removed; the people with the commonest label sets keep theirs by chance)."""
    pairs = [(a.categories, b.categories) for s, t in zip(original[split], shuffled[split],
                                                          strict=True)
             for a, b in zip(s.people, t.people, strict=True)]
    return sum(a != b for a, b in pairs) / max(1, len(pairs))


# --------------------------------------------------------------------------- runs


def same_start(model_file: str | Path) -> list[str]:
    """``key=value`` overrides (``model=...``, ``inference=...``) that give a config the model
    file's architecture and inference settings, as ``init_from`` gives them: the file's model
    section without its categories (the data's) and scores (they follow the loss), its
    inference settings without the emotion thresholds (the set may differ). Given to a
    fine-tuning run and to its from-scratch control, the two configs differ only where the
    caller makes them. They replace the config's ``model`` and ``inference`` sections whole:
    give changes to either after them."""
    from caer_ros.model.checkpoint import read_model_file

    info, _ = read_model_file(Path(model_file))
    model = info.config.to_dict()
    for key in ("categories", "scores"):
        model.pop(key, None)
    inference = info.inference.to_dict()
    inference.pop("emotion_thresholds", None)
    return [f"model={json.dumps(model)}", f"inference={json.dumps(inference)}"]


@dataclass
class RunResult:
    """One training run (:func:`train_run`)."""

    out: str
    steps: int
    train_s: float  # training time as the loop counts it (no validation, no files)
    wall_s: float  # the whole run: data loading, validations, files, calibration
    best_step: int | None  # the optimiser step best.pt was kept at (None: no best.pt)
    best_val_loss: float | None
    best_val_metric: float | None  # best_by: metric's score of best.pt (0..1)
    validations: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Path:
        return Path(self.out) / "best.pt"

    @property
    def final(self) -> Path:
        return Path(self.out) / "final.pt"

    def figures(self) -> dict[str, Any]:
        """The run's numbers for a figures file (the config left out)."""
        return {"out": self.out, "steps": self.steps, "train_s": round(self.train_s, 1),
                "s_per_step": round(self.train_s / max(1, self.steps), 3),
                "wall_s": round(self.wall_s, 1), "best_step": self.best_step,
                "best_val_loss": _finite(self.best_val_loss, 4),
                "best_val_metric": _finite(self.best_val_metric, 4),
                "validations": self.validations}


def train_run(config_file: str | Path | None, data: str | Path, out: str | Path, seed: int,
              overrides: Sequence[str] = (), progress: bool = False) -> RunResult:
    """Train one run from ``config_file`` and ``overrides`` on ``data`` into ``out`` (started
    over), with training seed ``seed``."""
    from training.config import load_config
    from training.train import Trainer

    config = load_config(config_file, [*overrides, f"out={out}", f"seed={seed}"], data)
    started = time.perf_counter()
    trainer = Trainer(config, restart=True, progress=progress)
    history = trainer.run()
    wall = time.perf_counter() - started
    return _run_result(out, trainer.state, history, wall, config.to_dict())


def _run_result(out: str | Path, state: Any, history: list[dict[str, Any]], wall: float,
                config: dict[str, Any]) -> RunResult:
    """A :class:`RunResult` from a finished loop's state and history and its ``best.pt``."""
    from caer_ros.model.checkpoint import read_model_file

    best = Path(out) / "best.pt"
    meta = read_model_file(best)[0].meta if best.exists() else {}
    validations, steps = [], 0
    for record in history:
        steps += record["steps"]
        if "val" in record:
            validations.append({"steps": steps, "val_loss": _finite(record["val"].get("total"), 4),
                                "val_metrics": {k: _finite(v, 4) for k, v in
                                                record.get("val_metrics", {}).items()}})
    return RunResult(str(out), state.global_step, state.elapsed_s, wall,
                     meta.get("global_step"), meta.get("val_loss"), meta.get("val_metric"),
                     validations, config)


def distill_run(teacher: str | Path, images: Sequence[str | Path], out: str | Path, seed: int,
                overrides: Sequence[str] = (), progress: bool = False) -> RunResult:
    """One :mod:`training.distill` run (started over) of a student from ``teacher`` on the
    unlabelled ``images``, training seed ``seed``; reported as :func:`train_run` reports."""
    from training.distill import distill, load_distill_config

    config = load_distill_config(None, [*overrides, f"seed={seed}"], teacher=str(teacher),
                                 images=[str(p) for p in images], out=str(out))
    started = time.perf_counter()
    loop = distill(config, progress=progress, restart=True)
    wall = time.perf_counter() - started
    return _run_result(out, loop.state, loop.state.history, wall, config.to_dict())


def student_overrides(preset: str) -> list[str]:
    """``model.<key>=value`` overrides that make a training config's model the student
    ``preset`` (:data:`caer_ros.model.config.STUDENT_PRESETS`); the config keeps its categories
    and input size."""
    from caer_ros.model.config import STUDENT_PRESETS

    return [f"model.{key}={json.dumps(value)}" for key, value in STUDENT_PRESETS[preset].items()]


def init_check(config_file: str | Path | None, data: str | Path, overrides: Sequence[str]
               ) -> dict[str, Any]:
    """What the config's ``init_from`` loads into its model (built as the trainer builds it,
    not trained): tensors loaded / new / skipped and each category's source."""
    from caer_ros.model.network import build_model
    from training.config import load_config
    from training.finetune import load_init_model

    config = load_config(config_file, overrides, data)
    if config.init_from is None:
        raise ValueError("init_check needs a config with init_from")
    report = load_init_model(build_model(config.model), config.init_from)
    return {"source": report.source, "loaded": len(report.loaded), "new": len(report.new),
            "skipped": len(report.skipped), "categories": dict(report.categories)}


# --------------------------------------------------------------------------- arms


@dataclass(frozen=True)
class ArmSetup:
    """How :func:`arm_run` trains an arm: the training config and its overrides, the training
    seed, the budget (training minutes; None: the config's, e.g. its ``max_steps``), how the
    model file reads the emotion maps (``inference.extraction``) and which model file of the
    run is evaluated (``final`` or ``best``)."""

    config_file: Path
    overrides: tuple[str, ...] = ()
    seed: int = 0
    budget_minutes: float | None = None
    extraction: str = "center"
    checkpoint: str = "final"
    progress: bool = False


def arm_run(name: str, data: Path, out: Path, setup: ArmSetup) -> dict[str, Any]:
    """Train one arm (``name``, in the lines printed) on ``data`` into ``out`` (started over) as
    ``setup`` says; evaluate its model file on the data's EMOTIC test split."""
    from caer_ros.inference.predictor import Predictor
    from training.config import load_config
    from training.evaluation.evaluate import evaluate
    from training.train import Trainer

    config = load_config(setup.config_file, [
        *setup.overrides, f"out={out}", f"seed={setup.seed}",
        f"budget_minutes={json.dumps(setup.budget_minutes)}",
        f"inference.extraction={setup.extraction}"], data)
    limit = f"{config.max_steps} steps" if config.budget_minutes is None else \
        f"budget {config.budget_minutes:g} min"
    print(f"[{name}] training on {data.name}: {limit} -> {out}", flush=True)
    started = time.perf_counter()
    trainer = Trainer(config, restart=True, progress=setup.progress)
    history = trainer.run()
    train_wall = time.perf_counter() - started
    state = trainer.state
    model = out / f"{setup.checkpoint}.pt"
    print(f"[{name}] {state.global_step} steps in {state.elapsed_s:.0f} s of training; "
          f"evaluating {model} on the test split", flush=True)
    started = time.perf_counter()
    records, _ = load_split(data, "emotic", "test")
    result = evaluate(Predictor.from_file(model), records, progress=setup.progress)
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
        "last_train_loss": _finite(last.get("train", {}).get("total"), 4),
        "last_val_loss": _finite(last.get("val", {}).get("total"), 4),
        # KA runs: eq. 7's loss over its value for zero student features
        # (training.objectives.amalgamation)
        "collapse_ratio": _finite(last.get("collapse_ratio"), 4),
        "validations": validations(history),
        "config": config.to_dict(),
    }


def validations(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each validation of a run: the steps and training seconds before it, its total loss and
    its emotion tasks' metrics (``val_metrics``, 0..1)."""
    out, steps = [], 0
    for record in history:
        steps += record["steps"]
        if "val" in record:
            out.append({"steps": steps, "elapsed_s": record["elapsed_s"],
                        "val_loss": _finite(record["val"].get("total"), 4),
                        "val_metrics": record.get("val_metrics", {})})
    return out


def check_model(model: Path, data: Path) -> dict[str, Any]:
    """Load the model file as the node and ``caer-infer`` do and run it on the test image of
    ``data`` with the most people."""
    import cv2

    from caer_ros.inference.predictor import Predictor

    records, _ = load_split(data, "emotic", "test")
    record = max(records, key=lambda r: len(r.people))
    predictor = Predictor.from_file(model)
    people = predictor.predict(cv2.imread(str(record.path), cv2.IMREAD_COLOR))
    return {"loads": True, "backend": predictor.backend, "image": str(record.path),
            "annotated_people": len(record.people), "detected_people": len(people),
            "categories": len(predictor.categories), "input_size": list(predictor.input_size),
            "extraction": predictor.settings.extraction}


# --------------------------------------------------------------------------- teachers


def classifier_teacher_run(config_file: Path, data: dict[str, Any], out: Path,
                           overrides: Sequence[str], progress: bool = False) -> dict[str, Any]:
    """Train a teacher classifier (:func:`training.train_teacher.train_teacher`) from
    ``config_file`` and ``overrides`` on ``data`` (``root``: its folder, ``images``: its counts)
    into ``out``; its best validation epoch's figures (``val_score``: macro F1, 0..1) and
    ``model``, its ``best.pt``."""
    from training.train_teacher import load_teacher_config, train_teacher

    config = load_teacher_config(config_file, [*overrides, f"out={out}"], data["root"])
    started = time.perf_counter()
    history = train_teacher(config, progress=progress)
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


def benet_teacher_run(config_file: Path, data: dict[str, Any], out: Path,
                      overrides: Sequence[str], progress: bool = False) -> dict[str, Any]:
    """Train a BENet teacher (:class:`training.train.Trainer`) from ``config_file`` and
    ``overrides`` on ``data`` (as :func:`classifier_teacher_run`) into ``out``; its best
    validation's figures (``val_score``: its EMOTIC-format set's ER mAP, 0..1)."""
    from training.config import load_config
    from training.train import Trainer

    config = load_config(config_file, [*overrides, f"out={out}"], data["root"])
    started = time.perf_counter()
    trainer = Trainer(config, restart=True, progress=progress)
    history = validations(trainer.run())
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


def probe_teachers(teachers: dict[str, dict[str, Any]], data: Path, truth: list[SceneTruth],
                   input_size: tuple[int, int], probes: dict[str, tuple[str, str]],
                   images: int) -> dict[str, dict[str, Any]]:
    """Each teacher's linear probe (:func:`training.teachers.probe.probe`) on the first
    ``images`` training scenes with people of the synthetic set ``data`` (its ground truth
    ``truth``): ``probes[name]`` is the factor of the truth a person is labelled with
    (:func:`~training.datasets.synthetic_variants.relabelled`) and the feature region."""
    from training.teachers.models import load_teacher
    from training.teachers.probe import person_features, probe

    records, _ = load_split(data, "emotic", "train")
    records = [r for r in records if r.people][:images]
    out = {}
    for name, teacher in teachers.items():
        factor, region = probes[name]
        extractor = load_teacher(teacher["model"])
        features, labels, images_of = person_features(extractor,
                                                      relabelled(records, truth, factor),
                                                      input_size, region)
        result = probe(features, labels, single_label=True, name=name, images=images_of)
        print(f"[probe] {result.line()} ({factor}, {region} region)", flush=True)
        out[name] = {"label": factor, "region": region, "metric": result.metric,
                     "score": round(result.score, 4), "chance": round(result.chance, 4),
                     "people": result.people, "carries_little": result.carries_little}
    return out


# --------------------------------------------------------------------------- speed models


def person_sized_boxes(model: Any, pixels: float = 96.0) -> None:
    """Bias the untrained size head towards person-sized boxes (``pixels`` wide and high).

    Untrained, it regresses sizes around 0, half of them negative: boxes with no area, which
    the predictor rightly drops. A trained head gives real sizes; with this bias every peak
    decodes to a real box, so the decoder returns exactly the number of people asked for.
    """
    import torch

    for stride, layers in zip((4, 2), model.detection.output_layers(), strict=False):
        with torch.no_grad():
            layers["size"][-1].bias.fill_(pixels / stride)  # map pixels


def untrained_model_file(preset: str, size: int, folder: Path, person_sized: bool = True
                         ) -> tuple[Path, Any]:
    """An untrained (seed 0) BENet on ``preset`` at ``size`` x ``size``, with person-sized
    boxes (:func:`person_sized_boxes`) unless ``person_sized`` is off, saved as
    ``folder``/bench.pt; the file and the model."""
    from caer_ros.model import InferenceSettings, ModelConfig, build_model, save_model_file

    config = ModelConfig(backbone=preset, input_size=(size, size))
    model = build_model(config, seed=0).eval()
    if person_sized:
        person_sized_boxes(model)
    path = save_model_file(folder / "bench.pt", model, InferenceSettings.for_model(config))
    return path, model


# --------------------------------------------------------------------------- figures


def split_images_folder(data: str | Path, split: str, out: str | Path) -> Path:
    """``out`` filled with links to the images of one split of the EMOTIC-layout dataset
    ``data`` (a folder of images any calibration set reads), emptied first; returns ``out``."""
    records, _ = load_split(data, "emotic", split)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for n, record in enumerate(records):
        source = Path(record.path).resolve()
        (out / f"{n:05d}_{source.name}").symlink_to(source)
    return out


def split_records(data: str | Path, dataset: str = "emotic", split: str = "test",
                  emotions: EmotionSet | None = None, heco: HecoSplit | None = None
                  ) -> list[ImageRecord]:
    """The records of one split as the evaluator reads them
    (:func:`training.evaluation.evaluate.evaluation_split`; a COCO folder is read with
    ``emotions``, the model's set of the lab's names; HECO as ``heco`` says, a training
    config's: :func:`training.data.batches.config_heco`)."""
    from training.evaluation.evaluate import evaluation_split

    return evaluation_split(data, dataset, split, emotions=emotions, heco=heco)[0]


def model_figures(model_file: str | Path, records: Sequence[ImageRecord],
                  progress: bool = False) -> dict[str, Any]:
    """ER mAP, PD AP, OER mAP (x100) and each category's AP of a model file on ``records``,
    through the node's predictor, and the seconds it took."""
    from caer_ros.inference.predictor import Predictor
    from training.evaluation.evaluate import evaluate

    started = time.perf_counter()
    result = evaluate(Predictor.from_file(Path(model_file)), records, progress=progress)
    return {"er_map": _finite(result.er_map), "pd_ap": _finite(result.pd_ap),
            "oer_map": _finite(result.oer_map),
            "per_category_ap": {k: _finite(v) for k, v in result.per_category_ap.items()
                                if math.isfinite(v)},
            "images": result.images, "people": result.people,
            "eval_s": round(time.perf_counter() - started, 1)}


def chance_er_map(records: Sequence[ImageRecord]) -> float:
    """ER mAP (x100) of constant scores on ``records``' people: each category's AP is then its
    share of positives, the level of a model that tells no person from another."""
    from training.evaluation.metrics import er_map

    labels = np.array([p.categories for r in records for p in r.people])
    return round(100 * er_map(np.zeros(labels.shape), labels)[0], 2)


def _finite(value: Any, digits: int = 2) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None
