"""From dataset records to training batches: BENet 3.3's two-part data processing and routing.

Per sample (one image of a batch):

1. the image is read (RGB) and its people become a :class:`~training.data.transforms.Sample`;
2. one pre-transform is drawn (``raw``, ``random_mask``, ``extract_subject``, ``mask_all``,
   with the config's probabilities; one that cannot apply to the image is redrawn among the
   others, :func:`training.data.transforms.draw_pre_transform`);
3. the result is letterboxed to the network input exactly as at inference
   (:func:`caer_ros.inference.preprocess.letterbox`), then augmented (training only);
4. the sample is *routed*: the config's ``routes`` name the heads its pre-transform trains
   (BENet 3.3: ExtractSubject -> person-centric, MaskAllSubjects -> background,
   RandomMaskSubjects -> bottom-up, raw -> detection), restricted to the enabled ``tasks``.

Randomness: every draw of a sample comes from a generator seeded with
``(seed, epoch, index)``, never from a global stream, so a run is the same whatever the number
of loader workers or DDP processes, and resuming at any step replays exactly what an
uninterrupted run would have seen. Validation samples use a fixed draw (epoch 0) and no
augmentation, so the validation loss of two epochs is comparable.

Mixed category sets (EMOTIC + HECO): each sample keeps the labels of its own set; the losses
of a set see only that set's samples, no label is invented across sets.

Bad data: the loaders skip and count what they cannot use (:mod:`training.datasets.records`);
:func:`config_split` prints what they skipped and refuses a split without one usable person. An
image that still cannot be read when a sample is made (changed on disk since) stops training
with one line naming it, also from a loader worker: the dataset returns a :class:`Failed` item
instead of raising there, and :func:`loader` raises :class:`DataError` in the training process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from caer_ros.image_file import ImageFileError, read_image
from caer_ros.inference.preprocess import letterbox, normalize
from training.config import TASKS, TrainConfig
from training.data.targets import ScaleTargets, build_targets
from training.data.transforms import AugmentConfig, Sample, augment, draw_pre_transform
from training.datasets.coco import CocoFormatError, EmotionSet
from training.datasets.records import ImageRecord, LoadReport
from training.datasets.splits import HecoSplit, load_split

STRIDES = (4, 2)  # the 1/4 and 1/2 outputs


class DataError(ValueError):
    """Training data that cannot be used; the message names the file."""


def config_split(config: TrainConfig, split: str
                 ) -> tuple[list[ImageRecord], list[LoadReport]]:
    """The records of ``split`` (``train`` or ``val``) from every source the config names, each
    read by :func:`training.datasets.splits.load_split` (HECO as :func:`config_heco` says), and
    the loaders' reports (:func:`print_reports` shows them).

    Raises:
        DataError: no data folder, unreadable annotations, missing images, or no usable person
            in the split (one line naming the place).
    """
    data = config.data
    if data.root is None:
        raise DataError("no data folder: pass --data DIR (or set data.root in the config)")
    records: list[ImageRecord] = []
    reports: list[LoadReport] = []
    for source in data_sources(config, split):
        try:
            found, report = load_split(data.root, source, split, heco=config_heco(config),
                                       emotions=coco_emotions(config) if source == "coco"
                                       else None)
        except (OSError, ValueError, CocoFormatError) as exc:  # missing or malformed files
            raise DataError(" ".join(str(exc).split())) from None
        records.extend(found)
        reports.append(report)
    if not records:
        sources = ", ".join(getattr(data, split))
        raise DataError(f"no {split} images in {data.root} (sources: {sources})")
    missing = [r.path for r in records if not Path(r.path).is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DataError(f"{len(missing)} {split} images are missing, e.g. {shown}")
    if not any(r.people for r in records):
        what = "; ".join(r.summary() for r in reports)
        raise DataError(f"no usable person in the {split} split ({what})")
    return records, reports


def config_heco(config: TrainConfig) -> HecoSplit:
    """Where the config's HECO labels and images are (``data.heco_csv``, ``data.heco_images``,
    relative to ``data.root`` unless absolute) and how HECO is split (``data.heco_seed``,
    ``data.heco_split``): what a HECO test split of a model trained with this config must be
    read with (:func:`training.datasets.splits.load_split`)."""
    data = config.data
    return HecoSplit(data.path(data.heco_csv), data.path(data.heco_images), data.heco_seed,
                     data.heco_split)


def data_sources(config: TrainConfig, split: str) -> tuple[str, ...]:
    """The sources of ``split`` (a lab's COCO folder is ``coco``: the config found it so)."""
    return tuple(getattr(config.data, split))


def coco_emotions(config: TrainConfig) -> EmotionSet:
    """The category set a COCO folder is read with: the model's first (``data.emotions``
    makes it the data's), with ``data.continuous_range``; single-label when the set is scored
    with a softmax (``emotion_loss: ce``) or is HECO."""
    name, names = next(iter(config.model.categories.items()))
    return EmotionSet(name, tuple(names), tuple(float(v) for v in config.data.continuous_range),
                      single_label=config.model.single_label(name))


def print_reports(reports: Sequence[LoadReport]) -> None:
    """Each report's summary (stdout) and its warnings: what was skipped or changed, where and
    why (stderr)."""
    for report in reports:
        print(report.summary(), flush=True)
        for line in report.warnings():
            print(line, file=sys.stderr, flush=True)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (h, w, 3) uint8 RGB (:func:`caer_ros.image_file.read_image`: a file cut
    short is refused); :class:`DataError` naming the file if unreadable."""
    try:
        return read_image(path, rgb=True)
    except ImageFileError as error:
        raise DataError(f"{path}: cannot read the image ({error.detail})") from None


@dataclass
class Failed:
    """A sample (or batch) that could not be made, and why; see the module docstring."""

    message: str


@dataclass
class Item:
    """One prepared sample."""

    image: np.ndarray  # (3, H, W) float32, normalised network input
    pre_transform: str
    category_set: str
    routes: np.ndarray  # (len(TASKS),) bool: the heads this sample trains
    boxes: np.ndarray  # (K, 4) float32 network-input pixels
    labels: np.ndarray  # (K, E) float32 labels of its own category set
    continuous: np.ndarray  # (K, 3) float32
    head_label: np.ndarray  # (E,) person-centric (the subject) / background (max over people)


class CaerDataset(torch.utils.data.Dataset):
    """Records -> :class:`Item`, indexed by ``(epoch, index)`` (see the module docstring)."""

    def __init__(self, records: Sequence[ImageRecord], config: TrainConfig, train: bool) -> None:
        self.records = list(records)
        self.config = config
        self.train = train
        self.probabilities = config.effective_pre_transforms()
        self.augment_config = config.augment if train else AugmentConfig.off()
        self.input_size = tuple(config.model.input_size)
        self.mean, self.std = config.model.input_mean, config.model.input_std

    def __len__(self) -> int:
        return len(self.records)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, epoch if self.train else 0, index,
                                      0 if self.train else 1])

    def __getitem__(self, key: tuple[int, int]) -> Item | Failed:
        try:
            return self.item(*key)
        except DataError as error:
            return Failed(str(error))

    def item(self, epoch: int, index: int) -> Item:
        """The sample ``index`` as drawn in ``epoch``; :class:`DataError` when it cannot be
        made."""
        record = self.records[index]
        rng = self.rng(epoch, index)
        image = read_rgb(record.path)
        height, width = image.shape[:2]
        boxes = np.array([p.box for p in record.people], np.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        sample = Sample(
            image=image, boxes=boxes,
            labels=np.array([p.categories for p in record.people], np.float32).reshape(
                len(record.people), len(record.categories)),
            continuous=np.array([p.continuous for p in record.people], np.float32).reshape(-1, 3))
        name, sample = draw_pre_transform(sample, self.probabilities, rng, self.config.max_cover)
        head_label = sample.labels.max(axis=0) if len(sample.labels) \
            else np.zeros(sample.labels.shape[1], np.float32)
        canvas, placement = letterbox(sample.image, self.input_size, rgb=True)
        in_boxes = placement.to_input(sample.boxes).astype(np.float32).reshape(-1, 4)
        canvas, in_boxes, keep = augment(canvas, in_boxes, self.augment_config, rng)
        routes = np.array([t in self.config.routes.get(name, ()) and t in self.config.tasks
                           for t in TASKS])
        return Item(
            image=normalize(canvas, self.mean, self.std)[0],
            pre_transform=name, category_set=record.category_set, routes=routes,
            boxes=np.asarray(in_boxes, np.float32).reshape(-1, 4)[keep] if len(keep) else
            np.zeros((0, 4), np.float32),
            labels=sample.labels[keep], continuous=sample.continuous[keep],
            head_label=head_label.astype(np.float32))


@dataclass
class Batch:
    """A collated batch: images, per-sample routing and labels, and the targets per stride."""

    images: Tensor  # (B, 3, H, W)
    routes: Tensor  # (B, len(TASKS)) bool
    category_sets: list[str]
    pre_transforms: list[str]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    continuous: list[np.ndarray]
    head_labels: list[np.ndarray]
    targets: list[ScaleTargets]  # one per stride of STRIDES (labels empty)

    def __len__(self) -> int:
        return len(self.category_sets)

    def route(self, task: str) -> Tensor:
        """(B,) bool: the samples that train ``task``."""
        return self.routes[:, TASKS.index(task)]

    def person_samples(self) -> np.ndarray:
        """The sample index of every person, in the order of :func:`read_at_centers`."""
        return np.concatenate([np.full(len(b), i) for i, b in enumerate(self.boxes)]
                              + [np.zeros(0, np.int64)]).astype(np.int64)


def make_collate(input_size: tuple[int, int], strides: Sequence[int] = STRIDES):
    """A ``collate_fn`` building :class:`Batch` (targets drawn in the loader workers)."""
    height, width = input_size

    def collate(items: list[Item]) -> Batch:
        boxes = [item.boxes for item in items]
        targets = [build_targets(boxes, [None] * len(items), s, (height // s, width // s))
                   for s in strides]
        return Batch(
            images=torch.from_numpy(np.stack([item.image for item in items])),
            routes=torch.from_numpy(np.stack([item.routes for item in items])),
            category_sets=[item.category_set for item in items],
            pre_transforms=[item.pre_transform for item in items],
            boxes=boxes, labels=[item.labels for item in items],
            continuous=[item.continuous for item in items],
            head_labels=[item.head_label for item in items], targets=targets)

    return collate


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world: int = 1, shuffle: bool = True, drop_last: bool = True
                  ) -> list[list[tuple[int, int]]]:
    """This process's share of each global batch of one epoch, as ``(epoch, index)`` keys.

    The order is a permutation seeded by ``(seed, epoch)``; global batch ``b`` holds positions
    ``b * batch_size ...``; process ``rank`` of ``world`` takes its contiguous slice of it, so
    the union over processes is exactly the 1-process batch. With ``drop_last`` an incomplete
    last batch is left out (unless it is the only one)."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(count) if shuffle \
        else np.arange(count)
    size = min(batch_size, count)
    full, rest = divmod(count, size)
    starts = list(range(0, full * size, size)) + ([] if drop_last or not rest else [full * size])
    batches = []
    for start in starts:
        members = order[start:start + size]
        share = np.array_split(members, world)[rank]
        batches.append([(epoch, int(i)) for i in share])
    return batches


def loader(dataset: CaerDataset, batches: list[list[tuple[int, int]]], workers: int,
           pin_memory: bool = False) -> Iterator[Batch]:
    """Iterate ``batches`` (from :func:`epoch_batches`) through a DataLoader
    (:func:`checked_loader`)."""
    return checked_loader(dataset, batches, workers, make_collate(dataset.input_size),
                          pin_memory)


def checked_loader(dataset: torch.utils.data.Dataset, batches: list[list[tuple[int, int]]],
                   workers: int, collate: Any = None, pin_memory: bool = False
                   ) -> Iterator[Any]:
    """Batches of ``dataset`` (whose items may be :class:`Failed`), collated by ``collate``
    (default: torch's). A failed item raises :class:`DataError` with its message here, in this
    process, not wrapped in a loader worker's traceback. Used by every training loop."""
    if not batches:
        return iter(())
    collate = collate or torch.utils.data.default_collate

    def collate_checked(items: list[Any]) -> Any:
        failed = [item for item in items if isinstance(item, Failed)]
        return failed[0] if failed else collate(items)

    def checked(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            if isinstance(batch, Failed):
                raise DataError(batch.message)
            yield batch

    return checked(torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_checked,
        pin_memory=pin_memory, persistent_workers=False))
