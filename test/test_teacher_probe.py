"""The teacher probe (training/teachers/probe.py): a teacher whose features carry the cue the
labels depend on scores well above chance, one whose features ignore it is flagged."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from caer_ros.labels import HECO
from training.datasets.records import ImageRecord, PersonRecord
from training.teachers.probe import MARGIN, main, probe, probe_teacher

COLOURS = ((0, 0, 200), (0, 200, 0), (200, 0, 0))  # BGR: the cue, one class each


def _records(folder: Path, count: int = 60) -> list[ImageRecord]:
    """64x64 noisy scenes, one person-sized box painted in its class's colour (HECO labels:
    classes 0..2), at a random place."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        image = rng.integers(60, 190, (64, 64, 3), dtype=np.uint8)
        cls = i % 3
        x, y = int(rng.integers(0, 40)), int(rng.integers(0, 24))
        image[y:y + 40, x:x + 20] = np.clip(np.array(COLOURS[cls]) + rng.integers(
            0, 50, (40, 20, 3)), 0, 255).astype(np.uint8)
        path = folder / f"scene_{i:03d}.png"
        cv2.imwrite(str(path), image)
        categories = np.zeros(len(HECO), np.float32)
        categories[cls] = 1.0
        person = PersonRecord((x, y, x + 20, y + 40), categories, np.full(3, np.nan))
        records.append(ImageRecord(path, 64, 64, [person], "train", "heco"))
    return records


class ColourTeacher(nn.Module):
    """Knows the cue: its map is the image's colour, averaged over 4x4 cells."""

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(rgb, 4)


class PositionTeacher(nn.Module):
    """Knows nothing of the cue: its map is the cells' coordinates, whatever the image."""

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        h, w = rgb.shape[-2] // 4, rgb.shape[-1] // 4
        rows = torch.linspace(0, 1, h)[:, None].expand(h, w)
        cols = torch.linspace(0, 1, w)[None, :].expand(h, w)
        return torch.stack([rows, cols])[None].expand(rgb.shape[0], 2, h, w)


def test_a_teacher_that_knows_the_cue_scores_high_and_one_that_does_not_is_flagged(tmp_path):
    records = _records(tmp_path)
    (knows,) = probe_teacher(ColourTeacher(), records, (64, 64), "colour")
    (blind,) = probe_teacher(PositionTeacher(), records, (64, 64), "position")
    assert knows.metric == blind.metric == "accuracy" and knows.people == 60
    assert knows.score >= 0.8 and not knows.carries_little, knows
    assert blind.score < blind.chance + MARGIN and blind.carries_little, blind
    assert "WARNING" in blind.line() and "WARNING" not in knows.line()
    assert f"accuracy {knows.score:.3f} on 60 people" in knows.line()


def test_multi_label_probes_score_er_map_and_inputs_are_checked():
    rng = np.random.default_rng(1)
    labels = (rng.random((80, 4)) < 0.4).astype(np.float32)
    features = labels * 3 + rng.normal(size=(80, 4))  # the features are the labels, noisy
    result = probe(features, labels, single_label=False, name="multi")
    assert result.metric == "er_map" and result.score > result.chance + MARGIN
    with pytest.raises(ValueError, match="at least 10 people"):
        probe(features[:5], labels[:5], single_label=True)


def test_the_probe_splits_by_image_so_a_scene_is_never_on_both_sides():
    """Features that say only which image a person is in, labels drawn per image: a split by
    person lets the probe recognise a scene it trained on (the old probe scored such
    features far above chance: issue 30, item 4); split by image, it is at chance. The
    solver is the convex one, run to convergence."""
    rng = np.random.default_rng(3)
    scenes, per_scene = 200, 3  # 256-dim signatures: the people split can memorise them
    signature = rng.normal(size=(scenes, 256))
    images = np.repeat(np.arange(scenes), per_scene)
    features = signature[images] + 0.01 * rng.normal(size=(len(images), 256))
    classes = rng.integers(0, 3, scenes)[images]
    labels = np.eye(3, dtype=np.float32)[classes]
    by_image = probe(features, labels, single_label=True, images=images)
    by_person = probe(features, labels, single_label=True)  # every person an image of its own
    assert by_image.converged and by_person.converged
    assert by_image.carries_little, by_image
    assert by_person.score > by_image.score + 0.3, (by_person, by_image)


def test_the_command_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["--teacher", str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("teacher_probe: ") and len(err.strip().splitlines()) == 1


class Identity(nn.Module):
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb


def test_person_features_follow_the_letterbox_and_the_head_region(tmp_path):
    """A 128x64 (W x H) image letterboxed to 64x64 (scale 1/2, 16 px bars top and bottom): the
    box mean reads the person's colours, the head region only its top quarter."""
    from training.teachers.probe import person_features

    image = np.zeros((64, 128, 3), np.uint8)
    image[8:56, 40:72] = (0, 0, 255)  # BGR red body
    image[8:20, 40:72] = (0, 255, 0)  # green head: the top quarter of the box
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), image)
    labels = np.eye(len(HECO), dtype=np.float32)[0]
    record = ImageRecord(path, 128, 64, [PersonRecord((40, 8, 72, 56), labels,
                                                      np.full(3, np.nan))], "train", "heco")
    box, _, images = person_features(Identity(), [record], (64, 64), "box")
    head, got, _ = person_features(Identity(), [record], (64, 64), "head")
    assert list(images) == [0]
    np.testing.assert_array_equal(got, labels[None])
    assert box[0, 0] > 0.6 and box[0, 1] > 0.15 and box[0, 2] < 0.05  # RGB: mostly red
    assert head[0, 1] > 0.9 and head[0, 0] < 0.1  # the head alone: green
