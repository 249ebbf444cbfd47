"""The one place where a dataset's train / val / test splits are defined: :func:`load_split`.

Training (:func:`training.data.batches.config_split`, one call per source of the config), the
evaluator (:func:`training.evaluation.evaluate.evaluation_split`) and the benchmarks read a
split through :func:`load_split`, so what a model is trained on and what it is tested on come
from the same rule and cannot overlap:

- ``emotic``: EMOTIC's own split (``Annotations/Annotations.mat``, :func:`load_emotic`);
- ``coco``: a lab's COCO folder, one file per split (:func:`load_coco`, read with a category
  set);
- ``heco``: HECO has no official split. :class:`HecoSplit` says where its labels and images
  are and how it is split: ``partition``, the KA paper's 70/10/20 partition from ``seed``
  (:func:`training.datasets.heco.heco_partition`, drawn over the usable images), or ``all``,
  every image in ``train`` (BENet's extra data) and none in ``val`` or ``test``: a test split
  never holds an image some training split of the same :class:`HecoSplit` holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.datasets.coco import EmotionSet, load_coco
from training.datasets.emotic import load_emotic
from training.datasets.heco import heco_partition, load_heco
from training.datasets.records import ImageRecord, LoadReport

DATASETS = ("emotic", "heco", "coco")
SPLITS = ("test", "val", "train")
HECO_LABELS = "HECO_Labels.csv"
#: Where a HECO folder's images are looked for when not named (the first that exists).
HECO_IMAGE_DIRS = (Path("heco") / "images", Path("images"), Path("."))
HECO_SPLITS = ("partition", "all")


@dataclass(frozen=True)
class HecoSplit:
    """Where HECO's labels and images are, and how its images are split (module docstring).
    A training config's is :func:`training.data.batches.config_heco`."""

    labels: Path
    images: Path
    seed: int = 0
    split: str = "partition"

    def __post_init__(self) -> None:
        if self.split not in HECO_SPLITS:
            raise ValueError(f"HECO split {self.split!r}: expected one of "
                             f"{', '.join(HECO_SPLITS)}")

    @classmethod
    def found(cls, root: str | Path, images: str | Path | None = None, seed: int = 0
              ) -> HecoSplit:
        """``root``'s ``HECO_Labels.csv`` and ``images`` (default: the first of
        :data:`HECO_IMAGE_DIRS` under ``root`` that exists, else ``root``), partitioned with
        ``seed``."""
        root = Path(root)
        if images is None:
            images = next((root / d for d in HECO_IMAGE_DIRS if (root / d).is_dir()), root)
        return cls(root / HECO_LABELS, Path(images), seed)


def load_split(root: str | Path, dataset: str, split: str, heco: HecoSplit | None = None,
               emotions: EmotionSet | None = None) -> tuple[list[ImageRecord], LoadReport]:
    """The records of ``split`` (``train``, ``val`` or ``test``) of the ``dataset`` (``emotic``,
    ``heco`` or ``coco``) in ``root``, and the loader's report. HECO is read and split as
    ``heco`` says (default: :meth:`HecoSplit.found` in ``root``); a COCO folder is read with
    ``emotions``.

    Raises:
        ValueError: an unknown dataset or split, a COCO folder without ``emotions``; the
            loaders' errors (missing or malformed files) pass through.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if dataset == "emotic":
        return load_emotic(root, split)
    if dataset == "coco":
        if emotions is None:
            raise ValueError("a COCO folder is read with a category set: give emotions")
        return load_coco(root, split, emotions)
    heco = heco or HecoSplit.found(root)
    records, report = load_heco(heco.labels, heco.images)
    if heco.split == "all":
        return (records if split == "train" else []), report
    return heco_partition(records, heco.seed)[split], report
