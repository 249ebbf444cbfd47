"""Tests of the synthetic data's two pools (generate_pools) and HECO style (apply_style)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from caer_ros.labels import EMOTIC, HECO
from training.datasets.emotic import load_emotic
from training.datasets.heco import load_heco
from training.datasets.synthetic import (
    SceneTruth,
    apply_style,
    generate_pools,
    main,
    render_scene,
)

SEED, IMAGES, SIZE, TEST_IMAGES = 11, 10, 64, 4
MAT_TEXT_HEADER = 116  # Annotations.mat starts with a text header that holds the creation time


def _pools(out: Path, shift: float = 1.0) -> dict[str, dict[str, list[SceneTruth]]]:
    return generate_pools(out, IMAGES, SEED, size=SIZE, shift=shift, test_images=TEST_IMAGES)


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    out = tmp_path_factory.mktemp("pools")
    return out, _pools(out)


def _scenes(splits: dict[str, list[SceneTruth]]) -> list[SceneTruth]:
    return [s for scenes in splits.values() for s in scenes]


def _pixel_hashes(folder: Path) -> dict[str, str]:
    """File name -> hash of the decoded pixels, for every image in ``folder``."""
    return {
        p.name: hashlib.sha256(cv2.imread(str(p), cv2.IMREAD_COLOR).tobytes()).hexdigest()
        for p in sorted(folder.glob("*.jpg"))
    }


def _image(seed: int = 0) -> np.ndarray:
    return render_scene(np.random.default_rng(seed), SIZE)[0]


def test_pools_write_the_layout(pools):
    out, truth = pools
    assert set(truth) == {"emotic", "heco", "cross_emotic_style", "cross_heco_style"}
    assert {k: len(v) for k, v in truth["emotic"].items()} == {"train": 6, "val": 2, "test": 2}
    assert [len(v) for v in truth["heco"].values()] == [IMAGES] and list(truth["heco"]) == ["all"]
    emotic_files = sorted(p.name for p in (out / "emotic" / "synthetic" / "images").iterdir())
    heco_files = sorted(p.name for p in (out / "heco" / "images").iterdir())
    assert emotic_files == [f"emotic_{i:05d}.jpg" for i in range(IMAGES)]
    assert heco_files == [f"heco_{i:05d}.jpg" for i in range(IMAGES)]
    assert (out / "Annotations" / "Annotations.mat").is_file()
    assert (out / "HECO_Labels.csv").is_file()
    for name in ("emotic_style", "heco_style"):
        scenes = truth[f"cross_{name}"]
        assert {k: len(v) for k, v in scenes.items()} == {"train": 0, "val": 0, "test": TEST_IMAGES}
        root = out / "cross" / name
        for scene in scenes["test"]:  # the same image under both layouts
            emotic_copy = root / "emotic" / "synthetic" / "images" / scene.filename
            heco_copy = root / "heco" / "images" / scene.filename
            assert emotic_copy.read_bytes() == heco_copy.read_bytes()


def test_no_image_is_shared_between_sets(pools):
    out, _ = pools
    sets = {
        "emotic": _pixel_hashes(out / "emotic" / "synthetic" / "images"),
        "heco": _pixel_hashes(out / "heco" / "images"),
        "cross_emotic_style": _pixel_hashes(out / "cross" / "emotic_style" / "heco" / "images"),
        "cross_heco_style": _pixel_hashes(out / "cross" / "heco_style" / "heco" / "images"),
    }
    for name, hashes in sets.items():
        count = IMAGES if name in ("emotic", "heco") else TEST_IMAGES
        assert len(set(hashes.values())) == len(hashes) == count, name
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(sets[a]) & set(sets[b]), f"{a} and {b} share a file name"
            assert not set(sets[a].values()) & set(sets[b].values()), f"{a} and {b} share pixels"


def test_apply_style_zero_is_the_identity_and_one_shifts_the_colour():
    image = _image()
    unchanged = apply_style(image, 0.0)
    assert unchanged is not image and unchanged.dtype == np.uint8
    np.testing.assert_array_equal(unchanged, image)
    styled = apply_style(image, 1.0)
    assert styled.shape == image.shape and styled.dtype == np.uint8
    b, _, r = styled.reshape(-1, 3).mean(0) - image.reshape(-1, 3).mean(0)
    assert np.abs(styled.reshape(-1, 3).mean(0) - image.reshape(-1, 3).mean(0)).max() > 10
    assert r - b > 10  # warmer: red up relative to blue
    assert styled.std() < image.std()  # lower contrast
    np.testing.assert_array_equal(apply_style(image, 1.0), styled)  # deterministic
    half = apply_style(image, 0.5).astype(float)
    assert np.abs(half - (image.astype(float) + styled) / 2).max() <= 1.0


def test_apply_style_keeps_the_shapes():
    image = _image(3)
    grey = [
        cv2.cvtColor(i, cv2.COLOR_BGR2GRAY).astype(float).ravel()
        for i in (image, apply_style(image, 1.0))
    ]
    assert np.corrcoef(*grey)[0, 1] > 0.8


@pytest.mark.parametrize("shift", [-0.1, 1.5, float("nan"), "0.5", None])
def test_apply_style_refuses_a_shift_outside_0_1(shift):
    with pytest.raises(ValueError, match=r"shift must be .*\[0, 1\]"):
        apply_style(_image(), shift)


def test_apply_style_refuses_a_non_bgr_image():
    with pytest.raises(ValueError, match=r"BGR uint8 image of shape \(H, W, 3\)"):
        apply_style(np.zeros((8, 8), np.uint8), 0.5)


def test_generate_pools_refuses_a_bad_shift_before_writing(tmp_path):
    with pytest.raises(ValueError, match="shift must be in"):
        generate_pools(tmp_path / "out", IMAGES, SEED, size=SIZE, shift=2.0)
    assert not (tmp_path / "out").exists()


def _check_emotic(records, scenes: list[SceneTruth]) -> None:
    assert [r.path.name for r in records] == [s.filename for s in scenes]
    for record, scene in zip(records, scenes, strict=True):
        assert len(record.people) == len(scene.people)
        for person, expected in zip(record.people, scene.people, strict=True):
            assert [EMOTIC[i] for i in person.category_indices] == sorted(
                expected.categories, key=EMOTIC.index
            )
            np.testing.assert_array_equal(person.continuous, expected.continuous)


def _check_heco(records, scenes: list[SceneTruth]) -> None:
    assert [r.path.name for r in records] == [s.filename for s in scenes]
    for record, scene in zip(records, scenes, strict=True):
        assert [HECO[p.category_indices[0]] for p in record.people] == [
            p.heco_category for p in scene.people
        ]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_emotic_pool_loads(pools, split):
    out, truth = pools
    records, report = load_emotic(out, split)
    scenes = truth["emotic"][split]
    assert report.skipped == [] and report.images == len(scenes)
    assert report.people == sum(len(s.people) for s in scenes)
    _check_emotic(records, scenes)


def test_heco_pool_loads(pools):
    out, truth = pools
    records, report = load_heco(out / "HECO_Labels.csv", out / "heco" / "images")
    scenes = truth["heco"]["all"]
    assert report.skipped == [] and report.mapped == [] and report.images == IMAGES
    assert report.people == sum(len(s.people) for s in scenes)
    _check_heco(records, scenes)


@pytest.mark.parametrize("name", ["emotic_style", "heco_style"])
def test_cross_sets_load_with_both_loaders(pools, name):
    out, truth = pools
    root, scenes = out / "cross" / name, truth[f"cross_{name}"]["test"]
    people = sum(len(s.people) for s in scenes)
    records, report = load_emotic(root, "test")
    assert report.skipped == [] and (report.images, report.people) == (TEST_IMAGES, people)
    _check_emotic(records, scenes)
    for split in ("train", "val"):
        assert load_emotic(root, split)[0] == []
    records, report = load_heco(root / "HECO_Labels.csv", root / "heco" / "images")
    assert report.skipped == [] and (report.images, report.people) == (TEST_IMAGES, people)
    _check_heco(records, scenes)


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.mark.parametrize(
    ("folder", "stream", "key", "shift"),
    [
        ("emotic/synthetic/images", SEED, "emotic", 0.0),
        ("heco/images", [SEED, 1], "heco", 1.0),
        ("cross/emotic_style/heco/images", [SEED, 2], "cross_emotic_style", 0.0),
        ("cross/heco_style/heco/images", [SEED, 3], "cross_heco_style", 1.0),
    ],
)
def test_each_set_is_its_stream_with_its_style(pools, folder, stream, key, shift):
    out, truth = pools
    rng = np.random.default_rng(stream)
    for scene in _scenes(truth[key]):
        image, people, context = render_scene(rng, SIZE)
        assert (people, context) == (scene.people, scene.context)
        assert (out / folder / scene.filename).read_bytes() == _jpeg(apply_style(image, shift))


def test_shift_zero_leaves_the_heco_pool_unstyled(pools, tmp_path):
    out, truth = pools
    plain = _pools(tmp_path, shift=0.0)
    assert plain == truth  # the style changes pixels only, never the scenes or labels
    rng = np.random.default_rng([SEED, 1])
    for scene in plain["heco"]["all"]:
        encoded = _jpeg(render_scene(rng, SIZE)[0])
        assert (tmp_path / "heco" / "images" / scene.filename).read_bytes() == encoded
        styled = (out / "heco" / "images" / scene.filename).read_bytes()
        assert styled != encoded
    styled_test = _pixel_hashes(out / "cross" / "heco_style" / "heco" / "images")
    plain_test = _pixel_hashes(tmp_path / "cross" / "heco_style" / "heco" / "images")
    assert not set(styled_test.values()) & set(plain_test.values())
    unstyled = _pixel_hashes(tmp_path / "cross" / "emotic_style" / "heco" / "images")
    assert plain_test != unstyled  # another stream, but no style in either
    for folder in ("emotic/synthetic/images", "cross/emotic_style/heco/images"):  # never styled
        assert _pixel_hashes(tmp_path / folder) == _pixel_hashes(out / folder)


def _files(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        skip = MAT_TEXT_HEADER if path.suffix == ".mat" else 0
        files[str(path.relative_to(root))] = path.read_bytes()[skip:]
    return files


def test_same_arguments_give_identical_files(pools, tmp_path):
    out, truth = pools
    assert _pools(tmp_path) == truth
    mine, theirs = _files(tmp_path), _files(out)
    assert len(mine) == 2 * IMAGES + 2 + 2 * (2 * TEST_IMAGES + 2)
    assert mine == theirs


def test_cli_writes_the_pools(tmp_path, capsys):
    args = "--pools --images 6 --size 32 --seed 2 --shift 0.5 --test-images 3".split()
    main([*args, "--out", str(tmp_path)])
    assert "shift 0.5" in capsys.readouterr().out
    assert len(list((tmp_path / "cross" / "heco_style" / "heco" / "images").glob("*.jpg"))) == 3
    assert load_heco(tmp_path / "HECO_Labels.csv", tmp_path / "heco" / "images")[1].images == 6


def test_cli_refuses_pool_options_without_pools(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--shift", "0.5"])
    with pytest.raises(SystemExit):
        main(["--pools", "--heco", "--out", str(tmp_path)])
