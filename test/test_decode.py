"""Decoding of network maps into people (caer_ros/inference/decode.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers.torch_decode import decode, extract_scores

from caer_ros.inference.decode import (
    Detections,
    SummedMaps,
    box_cells,
    cell_centers,
    center_cells,
    find_people,
    labels_over_threshold,
    peak_cells,
    peak_nms,
    read_people,
    read_scores,
    top_peaks,
)
from caer_ros.inference.graph import (
    ScoreMaps,
    activate,
    column_sums,
    merge_flipped,
    score_maps,
)
from caer_ros.model import InferenceSettings
from caer_ros.model.output import BENetOutput, ScaleOutput

INPUT = 128  # square network input, in pixels
SETS = {"emotic": 4, "heco": 3}
BACKGROUND = 0.05  # probability of heatmap and emotion maps away from people


@dataclass
class Person:
    cx: float
    cy: float
    w: float
    h: float
    score: float  # heatmap probability at the centre
    emotions: dict[str, tuple[float, ...]]
    continuous: tuple[float, float, float]

    @property
    def box(self) -> list[float]:
        half_w, half_h = self.w / 2, self.h / 2
        return [self.cx - half_w, self.cy - half_h, self.cx + half_w, self.cy + half_h]


def _logit(p: np.ndarray) -> torch.Tensor:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return torch.from_numpy(np.log(p / (1 - p)).astype(np.float32))


def render(people: list[Person], stride: int, sigma: float = 4.0) -> ScaleOutput:
    """Maps a perfect network would give, sampled at cell centres (batch of one).

    Heatmap: a Gaussian (sigma in input pixels) scaled to the person's score; size, emotion and
    continuous maps: the person's values on the cells whose centre is inside the person's box.
    """
    n = INPUT // stride
    centres = (np.arange(n) + 0.5) * stride
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    heat = np.full((n, n), BACKGROUND)
    size = np.zeros((2, n, n))
    emotions = {name: np.full((e, n, n), BACKGROUND) for name, e in SETS.items()}
    continuous = np.full((3, n, n), 0.5)
    for p in people:
        gauss = p.score * np.exp(-((xs - p.cx) ** 2 + (ys - p.cy) ** 2) / (2 * sigma**2))
        heat = np.maximum(heat, gauss)
        x1, y1, x2, y2 = p.box
        inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        size[:, inside] = np.array([[p.w], [p.h]]) / stride
        for name, values in p.emotions.items():
            emotions[name][:, inside] = np.array(values)[:, None]
        continuous[:, inside] = np.array(p.continuous)[:, None]
    return ScaleOutput(
        stride=stride,
        heatmap=_logit(heat)[None, None],
        size=torch.from_numpy(size.astype(np.float32))[None],
        emotions={name: _logit(m)[None] for name, m in emotions.items()},
        continuous=_logit(continuous)[None],
    )


def output_of(people: list[Person], half: bool = False) -> BENetOutput:
    return BENetOutput(quarter=render(people, 4), half=render(people, 2) if half else None)


def flip_output(output: BENetOutput) -> BENetOutput:
    """The maps a perfect network gives for the mirrored image."""
    flat = {k: v.flip(-1) for k, v in output.flat().items()}
    return BENetOutput.from_flat(flat)


def cat(outputs: list[BENetOutput]) -> BENetOutput:
    """Concatenate outputs along the batch."""
    flats = [o.flat() for o in outputs]
    return BENetOutput.from_flat({k: torch.cat([f[k] for f in flats]) for k in flats[0]})


# Three people centred on 1/4-map cell centres (4 * j + 2), boxes not overlapping.
PEOPLE = [
    Person(22, 26, 24, 40, 0.9, {"emotic": (0.9, 0.1, 0.7, 0.2), "heco": (0.3, 0.8, 0.1)},
           (0.8, 0.4, 0.6)),
    Person(82, 42, 32, 48, 0.8, {"emotic": (0.2, 0.6, 0.3, 0.95), "heco": (0.6, 0.2, 0.4)},
           (0.2, 0.7, 0.5)),
    Person(50, 102, 16, 20, 0.6, {"emotic": (0.5, 0.5, 0.05, 0.4), "heco": (0.1, 0.1, 0.9)},
           (0.5, 0.5, 0.3)),
]


def assert_people(det: Detections, people: list[Person], box_atol: float = 1e-3) -> None:
    """``det`` holds exactly ``people`` (given highest score first)."""
    assert len(det) == len(people)
    np.testing.assert_allclose(det.boxes, [p.box for p in people], atol=box_atol)
    np.testing.assert_allclose(det.detection_scores, [p.score for p in people], atol=1e-4)
    np.testing.assert_allclose(det.scores, [p.emotions["emotic"] for p in people], atol=1e-4)
    np.testing.assert_allclose(
        det.set_scores["heco"], [p.emotions["heco"] for p in people], atol=1e-4
    )
    np.testing.assert_allclose(det.continuous, [p.continuous for p in people], atol=1e-4)


# --------------------------------------------------------------------------- whole decode


@pytest.mark.parametrize("extraction", ["box_mean", "center"])
def test_decode_finds_exactly_the_people(extraction):
    settings = InferenceSettings(detection_threshold=0.3, extraction=extraction, fuse_scales=False)
    (det,) = decode(output_of(PEOPLE), settings)
    assert det.category_set == "emotic"
    assert det.boxes.dtype == np.float32 and det.detection_scores.dtype == np.float32
    assert_people(det, PEOPLE)


def test_decode_accepts_the_flat_numpy_outputs_of_onnx_runtime():
    flat = {k: v.numpy() for k, v in output_of(PEOPLE).flat().items()}
    settings = InferenceSettings(fuse_scales=False)
    (det,) = decode(flat, settings)
    assert_people(det, PEOPLE)


def test_threshold_filters_and_top_k_caps():
    output = output_of(PEOPLE)
    (det,) = decode(output, InferenceSettings(detection_threshold=0.7))
    assert_people(det, PEOPLE[:2])
    (det,) = decode(output, InferenceSettings(detection_threshold=0.3, top_k=1))
    assert_people(det, PEOPLE[:1])
    (det,) = decode(output, InferenceSettings(detection_threshold=0.95))
    assert len(det) == 0 and det.boxes.shape == (0, 4) and det.scores.shape == (0, 4)


def test_primary_set_selects_the_scores():
    (det,) = decode(output_of(PEOPLE), primary_set="heco")
    assert det.category_set == "heco"
    np.testing.assert_allclose(det.scores, [p.emotions["heco"] for p in PEOPLE], atol=1e-4)
    with pytest.raises(ValueError, match="no emotion maps for category set 'nope'"):
        decode(output_of(PEOPLE), primary_set="nope")


def test_batch_of_two_decodes_each_image_independently():
    other = [Person(70, 70, 40, 60, 0.7, {"emotic": (0.1, 0.2, 0.3, 0.4), "heco": (0.5,) * 3},
                    (0.1, 0.2, 0.3))]
    batch = cat([output_of(PEOPLE), output_of(other)])
    first, second = decode(batch)
    assert_people(first, PEOPLE)
    assert_people(second, other)


def test_fusing_quarter_and_half_maps_finds_the_same_people():
    # Centres at 4j + 1: inside 1/4 cell j and exactly at the centre of 1/2 cell 2j.
    people = [
        Person(21, 25, 24, 40, 0.9, PEOPLE[0].emotions, PEOPLE[0].continuous),
        Person(81, 41, 32, 48, 0.8, PEOPLE[1].emotions, PEOPLE[1].continuous),
        Person(49, 101, 16, 20, 0.6, PEOPLE[2].emotions, PEOPLE[2].continuous),
    ]
    output = output_of(people, half=True)
    fused = score_maps(output, InferenceSettings(fuse_scales=True))
    assert fused.stride == 2 and fused.heatmap.shape == (1, 1, 64, 64)
    centre = InferenceSettings(extraction="center")
    (quarter,) = decode(output, dataclasses.replace(centre, fuse_scales=False))
    (both,) = decode(output, dataclasses.replace(centre, fuse_scales=True))
    assert len(quarter) == len(both) == 3
    # 1/2 grid: centres exact; 1/4 grid: quantised to the cell centre, one pixel off.
    np.testing.assert_allclose(both.boxes, [p.box for p in people], atol=1e-3)
    np.testing.assert_allclose(quarter.boxes, [p.box for p in people], atol=1.0 + 1e-3)
    expected = [p.emotions["emotic"] for p in people]
    np.testing.assert_allclose(both.scores, expected, atol=1e-4)
    np.testing.assert_allclose(quarter.scores, expected, atol=1e-4)
    np.testing.assert_allclose(both.continuous, quarter.continuous, atol=1e-4)
    # Box means also see the box edges, where the upsampled 1/4 maps blur into the background.
    (means,) = decode(output, InferenceSettings(extraction="box_mean", fuse_scales=True))
    np.testing.assert_allclose(means.scores, expected, atol=0.05)
    # The upsampled 1/4 heatmap is lower away from its own cell centres: fused <= true score.
    true_scores = np.array([p.score for p in people])
    assert (both.detection_scores <= true_scores + 1e-6).all()
    assert (both.detection_scores > 0.9 * true_scores).all()


def test_fuse_scales_converts_sizes_to_common_units():
    person = [Person(41, 41, 40, 24, 0.9, PEOPLE[0].emotions, PEOPLE[0].continuous)]
    fused = score_maps(output_of(person, half=True), InferenceSettings(fuse_scales=True))
    assert fused.size[0, :, 20, 20].tolist() == pytest.approx([40.0, 24.0])


# --------------------------------------------------------------------------- flip test


def test_flip_test_on_a_symmetric_scene_is_consistent():
    emotions = PEOPLE[0].emotions
    # Centres on 1/2 cell centres (no plateau between two cells); box edges off every cell
    # centre, so that painting [x1, x2) is mirror-symmetric.
    left = Person(33, 49, 27, 41, 0.9, emotions, (0.8, 0.4, 0.6))
    right = Person(INPUT - 33, 49, 27, 41, 0.9, emotions, (0.8, 0.4, 0.6))
    output = output_of([left, right], half=True)
    flipped = flip_output(output)
    for a, b in zip(output.flat().values(), flipped.flat().values(), strict=True):
        assert torch.equal(a, b)  # the scene is its own mirror image
    (plain,) = decode(output)
    (merged,) = decode(output, InferenceSettings(flip_test=True), flipped=flipped)
    assert len(merged) == 2
    np.testing.assert_allclose(merged.boxes, plain.boxes, atol=1e-4)
    np.testing.assert_allclose(merged.scores, plain.scores, atol=1e-5)
    np.testing.assert_allclose(merged.boxes[:, [0, 2]].mean(), INPUT / 2, atol=1e-4)


def test_flip_test_flips_the_mirrored_maps_back():
    output = output_of(PEOPLE, half=True)
    (plain,) = decode(output)
    (merged,) = decode(output, InferenceSettings(flip_test=True), flipped=flip_output(output))
    np.testing.assert_allclose(merged.boxes, plain.boxes, atol=1e-4)
    np.testing.assert_allclose(merged.detection_scores, plain.detection_scores, atol=1e-5)
    np.testing.assert_allclose(merged.scores, plain.scores, atol=1e-5)
    np.testing.assert_allclose(merged.continuous, plain.continuous, atol=1e-5)


def test_merge_flipped_averages_with_the_mirror():
    a = activate(render(PEOPLE, 4))
    b = ScoreMaps(
        stride=4,
        heatmap=torch.rand_like(a.heatmap),
        size=torch.rand_like(a.size),
        emotions={k: torch.rand_like(v) for k, v in a.emotions.items()},
        continuous=torch.rand_like(a.continuous),
    )
    merged = merge_flipped(a, b)
    torch.testing.assert_close(merged.size, (a.size + b.size.flip(-1)) / 2)
    torch.testing.assert_close(
        merged.emotions["heco"], (a.emotions["heco"] + b.emotions["heco"].flip(-1)) / 2
    )


def test_flip_test_needs_the_flipped_output():
    with pytest.raises(ValueError, match="flip_test is on"):
        decode(output_of(PEOPLE), InferenceSettings(flip_test=True))


# --------------------------------------------------------------------------- peaks


def test_peak_nms_suppresses_neighbours_and_keeps_separate_peaks():
    heat = np.zeros((8, 8), np.float32)
    heat[2:5, 2:5] = 0.5  # neighbours of the first peak
    heat[3, 3] = 0.9
    heat[3, 6] = 0.6  # a second peak three cells away
    heat[7, 0] = 0.2  # a peak in the corner: the border does not suppress it
    kept = peak_nms(heat, 3)
    assert np.argwhere(kept).tolist() == [[3, 3], [3, 6], [7, 0]]
    assert kept[3, 3] == pytest.approx(0.9) and kept[3, 6] == pytest.approx(0.6)
    # A 7x7 window sees both (and the 0.5 ring from the corner): only the highest survives.
    assert np.argwhere(peak_nms(heat, 7)).tolist() == [[3, 3]]
    np.testing.assert_array_equal(peak_nms(heat, 1), heat)
    assert heat[2, 2] == 0.5  # the input is left alone


def test_peak_nms_matches_a_torch_max_pool():
    heat = np.random.default_rng(3).uniform(size=(37, 53)).astype(np.float32)
    t = torch.from_numpy(heat)[None, None]
    for kernel in (3, 5):
        pooled = torch.nn.functional.max_pool2d(t, kernel, stride=1, padding=kernel // 2)
        expected = (t * (pooled == t))[0, 0].numpy()
        np.testing.assert_array_equal(peak_nms(heat, kernel), expected)


def test_top_peaks_order_cap_and_threshold():
    heat = np.zeros((6, 10), np.float32)
    heat[1, 2], heat[4, 7], heat[5, 0], heat[0, 9] = 0.3, 0.9, 0.6, 0.6
    scores, rows, cols = top_peaks(heat, 3)
    np.testing.assert_allclose(scores, [0.9, 0.6, 0.6])
    assert rows.tolist() == [4, 0, 5] and cols.tolist() == [7, 9, 0]  # ties in raster order
    scores, _, _ = top_peaks(heat, 10)
    assert len(scores) == 4  # zero (suppressed) cells are never people
    scores, _, _ = top_peaks(heat, 10, threshold=0.5)
    np.testing.assert_allclose(scores, [0.9, 0.6, 0.6])
    assert len(top_peaks(heat, 0)[0]) == 0
    assert scores.dtype == np.float32


def test_peak_cells_is_top_peaks_of_peak_nms():
    rng = np.random.default_rng(5)
    for shape in ((7, 9), (64, 48)):
        heat = rng.random(shape).astype(np.float32)
        heat[heat < 0.3] = 0.0  # zero cells and plateaus of equal values
        heat[2, 2:5] = 0.95
        for kernel in (1, 3, 5):
            for k, threshold in ((3, 0.0), (40, 0.0), (40, 0.6), (0, 0.0)):
                expected = top_peaks(peak_nms(heat, kernel), k, threshold)
                got = peak_cells(heat, kernel, k, threshold)
                for a, b in zip(got, expected, strict=True):
                    np.testing.assert_array_equal(a, b)


def test_cell_centre_convention_round_trips():
    rows, cols = np.array([0, 3, 7]), np.array([5, 0, 7])
    cx, cy = cell_centers(rows, cols, 4)
    assert cx.tolist() == [22.0, 2.0, 30.0] and cy.tolist() == [2.0, 14.0, 30.0]
    back_rows, back_cols = center_cells(cx, cy, 4, 8, 8)
    assert back_rows.tolist() == rows.tolist() and back_cols.tolist() == cols.tolist()
    # A cell covers [4j, 4j + 4): its left edge belongs to it, its right edge to the next cell.
    _, c = center_cells(np.array([4.0, 7.999, 8.0, -3.0, 99.0]), np.zeros(5), 4, 8, 8)
    assert c.tolist() == [1, 1, 2, 0, 7]


# --------------------------------------------------------------------------- emotion scores


def _reference_cells(lo: float, hi: float, size: int) -> list[int]:
    """Slow statement of the rule: cells whose centre is in [lo, hi), else the centre's cell."""
    cells = [j for j in range(size) if lo <= j + 0.5 < hi]
    return cells or [min(max(math.floor((lo + hi) / 2), 0), size - 1)]


def _random_boxes(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    xy1 = rng.uniform([-4, -4], [w + 2, h + 2], size=(n, 2))
    wh = rng.choice([0.0, 0.3, 0.9, 2.5, 7.0, 15.0], size=(n, 2)) + rng.uniform(0, 1, (n, 2))
    return np.concatenate([xy1, xy1 + wh], axis=1)


def test_box_mean_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    maps = rng.uniform(size=(2, 5, 17, 23)).astype(np.float32)
    boxes = np.stack([_random_boxes(rng, 40, 17, 23) for _ in range(2)])
    fast = extract_scores(torch.from_numpy(maps), torch.from_numpy(boxes), "box_mean")
    assert isinstance(fast, torch.Tensor) and fast.shape == (2, 40, 5)
    for b in range(2):
        for k, (x1, y1, x2, y2) in enumerate(boxes[b]):
            xs, ys = _reference_cells(x1, x2, 23), _reference_cells(y1, y2, 17)
            expected = maps[b][:, ys][:, :, xs].reshape(5, -1).mean(1)
            np.testing.assert_allclose(fast[b, k].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_float32_row_sums_read_the_same_box_means():
    """The graph's float32 prefix sums (256 rows, as at 512x512) lose no useful precision."""
    rng = np.random.default_rng(2)
    maps = rng.uniform(size=(1, 3, 256, 256)).astype(np.float32)
    sums = column_sums(ScoreMaps(2, torch.zeros(1, 1, 256, 256), torch.zeros(1, 2, 256, 256),
                                 {"x": torch.from_numpy(maps)}))["emotion_sums.x"]
    assert sums.dtype == torch.float32 and sums.shape == (1, 3, 257, 256)
    boxes = np.concatenate([_random_boxes(rng, 50, 256, 256), [[0, 0, 256, 256], [5, 250, 6, 251]]])
    expected = extract_scores(maps[0], boxes)
    np.testing.assert_allclose(read_scores(sums[0].numpy(), boxes), expected, atol=2e-5)
    np.testing.assert_allclose(read_scores(sums[0].numpy(), boxes * 2, stride=2), expected,
                               atol=2e-5)
    centre = read_scores(sums[0].numpy(), boxes, "center")
    np.testing.assert_allclose(centre, extract_scores(maps[0], boxes, "center"), atol=2e-5)


def test_box_cells_has_at_least_one_cell():
    boxes = np.array([[3.6, 2.1, 3.9, 2.4], [-9.0, -9.0, -5.0, -5.0], [40.0, 1.0, 50.0, 2.0]])
    x0, y0, x1, y1 = box_cells(boxes, 8, 8)
    assert x0.tolist() == [3, 0, 7] and x1.tolist() == [4, 1, 8]
    assert y0.tolist() == [2, 0, 1] and y1.tolist() == [3, 1, 2]


def test_center_mode_reads_the_centre_cell():
    rng = np.random.default_rng(1)
    maps = rng.uniform(size=(4, 17, 23)).astype(np.float32)
    boxes = _random_boxes(rng, 30, 17, 23)
    values = extract_scores(maps, boxes, "center")  # one image, numpy in and out
    assert isinstance(values, np.ndarray) and values.shape == (30, 4)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        col = min(max(math.floor((x1 + x2) / 2), 0), 22)
        row = min(max(math.floor((y1 + y2) / 2), 0), 16)
        np.testing.assert_allclose(values[k], maps[:, row, col], atol=1e-6)


def test_extract_scores_with_boxes_in_input_pixels():
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2:4, 4:6] = 1.0  # input pixels x in [16, 24), y in [8, 16) at stride 4
    boxes = torch.tensor([[[16.0, 8.0, 24.0, 16.0], [16.0, 8.0, 32.0, 16.0]]])
    assert extract_scores(maps, boxes, "box_mean", stride=4)[0, :, 0].tolist() == [1.0, 0.5]
    assert extract_scores(maps, boxes / 4, "box_mean")[0, :, 0].tolist() == [1.0, 0.5]
    empty = extract_scores(maps, torch.zeros(1, 0, 4), "box_mean", stride=4)
    assert empty.shape == (1, 0, 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        extract_scores(maps, boxes, "max")


def _summed(output: BENetOutput, settings: InferenceSettings | None = None) -> SummedMaps:
    maps = score_maps(output, settings or InferenceSettings(fuse_scales=False))
    return SummedMaps.from_outputs(column_sums(maps), maps.stride)


def test_read_people_with_ground_truth_boxes():
    maps = _summed(output_of(PEOPLE))
    boxes = np.array([[p.box for p in PEOPLE]])
    emotions, continuous = read_people(maps, boxes, "box_mean")
    np.testing.assert_allclose(emotions["emotic"][0], [p.emotions["emotic"] for p in PEOPLE],
                               atol=1e-4)
    np.testing.assert_allclose(continuous[0], [p.continuous for p in PEOPLE], atol=1e-4)
    with pytest.raises(ValueError, match="boxes must be"):
        read_people(maps, boxes[0], "box_mean")


def test_summed_maps_give_back_the_maps_and_check_shapes():
    output = output_of(PEOPLE)
    maps = _summed(output)
    assert maps.stride == 4 and maps.batch == 1 and set(maps.emotion_sums) == set(SETS)
    np.testing.assert_allclose(maps.emotion_maps("heco"),
                               output.quarter.emotions["heco"].sigmoid().numpy(), atol=1e-5)
    named = column_sums(score_maps(output, InferenceSettings(fuse_scales=False)))
    named["emotion_sums.heco"] = named["emotion_sums.heco"][:, :, 1:]
    with pytest.raises(ValueError, match="heco sums must be"):
        SummedMaps.from_outputs(named, 4)
    with pytest.raises(ValueError, match="graph outputs lack"):
        SummedMaps.from_outputs({"heatmap": named["heatmap"]}, 4)


def test_find_people_overrides_threshold_and_count():
    maps = _summed(output_of(PEOPLE))
    settings = InferenceSettings(detection_threshold=0.3, fuse_scales=False)
    (det,) = find_people(maps, settings)
    assert_people(det, PEOPLE)
    (det,) = find_people(maps, settings, detection_threshold=0.7)
    assert_people(det, PEOPLE[:2])
    (det,) = find_people(maps, settings, max_people=1)
    assert_people(det, PEOPLE[:1])
    (det,) = find_people(maps, settings, max_people=0)
    assert len(det) == 0
    with pytest.raises(ValueError, match="detection_threshold must be in"):
        find_people(maps, settings, detection_threshold=1.5)
    with pytest.raises(ValueError, match="max_people must be"):
        find_people(maps, settings, max_people=-1)


# --------------------------------------------------------------------------- labels


def test_labels_over_threshold_highest_first():
    categories = ["Anger", "Fear", "Happiness", "Peace"]
    scores = np.array([[0.2, 0.7, 0.9, 0.5], [0.1, 0.1, 0.1, 0.1], [0.6, 0.6, 0.3, 0.8]])
    assert labels_over_threshold(scores, categories, 0.5) == [
        ["Happiness", "Fear", "Peace"], [], ["Peace", "Anger", "Fear"]
    ]
    per_category = [0.1, 0.8, 0.95, 0.5]
    assert labels_over_threshold(scores, categories, per_category) == [
        ["Peace", "Anger"], ["Anger"], ["Peace", "Anger"]
    ]
    assert labels_over_threshold(np.zeros((0, 4)), categories, 0.5) == []
    # a single-label set: the top category alone, whatever its score (ties: category order) ...
    assert labels_over_threshold(scores, categories, per_category, single_label=True) == [
        ["Happiness"], ["Anger"], ["Peace"]
    ]
    # ... or only when it reaches its threshold (Happiness 0.9 < 0.95)
    assert labels_over_threshold(scores, categories, per_category, single_label=True,
                                 top_needs_threshold=True) == [[], ["Anger"], ["Peace"]]
    with pytest.raises(ValueError, match="one per category"):
        labels_over_threshold(scores, categories, [0.5, 0.5])
    with pytest.raises(ValueError, match="scores must be"):
        labels_over_threshold(scores[:, :3], categories, 0.5)


def test_decode_leaves_the_network_output_unchanged():
    output = output_of(PEOPLE, half=True)
    flipped = flip_output(output)
    before = {k: v.clone() for k, v in {**output.flat(), **flipped.flat()}.items()}
    decode(output, InferenceSettings(flip_test=True), flipped=flipped)
    after = {**output.flat(), **flipped.flat()}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_to_image_maps_boxes_and_leaves_out_people_in_the_letterbox_border():
    """A peak in the letterbox border gives a box that, clipped to the image, has no width or
    height: no pixel of that "person" is in the image, so it is left out."""
    from caer_ros.inference.preprocess import letterbox

    _, placement = letterbox(np.zeros((50, 100, 3), np.uint8), (64, 64))  # pads top/bottom
    inside = placement.to_input(np.array([[10, 5, 60, 45]], np.float64))[0]
    det = Detections(
        boxes=np.array([inside, [0, 0, 64, 10], [20, 60, 40, 64]], np.float32),
        detection_scores=np.array([0.9, 0.8, 0.7], np.float32),
        scores=np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], np.float32),
        continuous=np.array([[0.1] * 3, [0.2] * 3, [0.3] * 3], np.float32),
        category_set="a",
        set_scores={"a": np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], np.float32),
                    "b": np.array([[1.0], [2.0], [3.0]], np.float32)},
    )
    kept = det.to_image(placement)
    assert len(kept) == 1
    np.testing.assert_allclose(kept.boxes, [[10, 5, 60, 45]], atol=1e-4)
    assert kept.detection_scores.tolist() == [np.float32(0.9)]
    assert kept.scores.tolist() == [[np.float32(0.1), np.float32(0.2)]]
    assert kept.continuous.shape == (1, 3)
    assert {k: v.shape for k, v in kept.set_scores.items()} == {"a": (1, 2), "b": (1, 1)}
