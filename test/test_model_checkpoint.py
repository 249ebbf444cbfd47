"""The model file: round trip, atomic writes, and one clear error for every bad file."""

from __future__ import annotations

import pickle

import pytest
import torch

from caer_ros.labels import EMOTIC, HECO
from caer_ros.model import (
    InferenceSettings,
    ModelConfig,
    ModelFileError,
    build_model,
    load_model_file,
    read_model_file,
    save_model_file,
)
from caer_ros.model.checkpoint import FORMAT, VERSION

SIZE = (64, 64)


def small_config(**changes) -> ModelConfig:
    values = {"backbone": "hrnet_w18_small", "input_size": SIZE, "head_blocks": 1,
              "categories": {"heco": HECO, "emotic": EMOTIC}, "continuous": True}
    values.update(changes)
    return ModelConfig(**values)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-looking model (BN statistics updated by a training-mode pass) and its file."""
    model = build_model(small_config(), seed=1)
    with torch.no_grad():
        model.train()(torch.randn(2, 3, *SIZE))
    model.eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    settings = InferenceSettings.for_model(model.config, detection_threshold=0.4,
                                           extraction="center")
    save_model_file(path, model, inference=settings, meta={"trained": True, "seed": 1,
                                                           "epochs": 3})
    return model, path, settings


def test_round_trip_gives_identical_outputs_and_plain_data(saved):
    model, path, settings = saved
    loaded, info = load_model_file(path)
    assert not loaded.training
    assert info.path == str(path) and info.version == VERSION
    assert info.config == model.config
    assert info.inference == settings
    assert info.meta["trained"] is True and info.meta["epochs"] == 3
    assert info.meta["created_by"].startswith("caer_ros ")
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        expected, got = model(images).flat(), loaded(images).flat()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_file_holds_only_plain_data_and_tensors(saved):
    _, path, _ = saved
    data = torch.load(path, weights_only=True)
    assert data["format"] == FORMAT and data["version"] == VERSION
    assert set(data) == {"format", "version", "config", "inference", "state_dict", "meta"}
    assert data["inference"]["emotion_thresholds"]["heco"] == [0.5] * 8
    assert data["config"]["categories"]["heco"] == list(HECO)


def test_default_inference_settings_and_meta(tmp_path):
    model = build_model(small_config(person_centric=False, background=False), seed=0)
    path = save_model_file(tmp_path / "m.pt", model)
    info, state = read_model_file(path)
    assert info.inference == InferenceSettings.for_model(model.config)
    assert info.meta["trained"] is False and info.meta["seed"] is None
    assert state.keys() == model.state_dict().keys()


def test_save_is_atomic(tmp_path, monkeypatch, saved):
    _, original, _ = saved
    target = tmp_path / "model.pt"
    target.write_bytes(original.read_bytes())
    before = target.read_bytes()
    model = build_model(small_config(), seed=2)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model_file(target, model)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left
    with pytest.raises(ValueError, match="only plain data"):
        save_model_file(target, model, meta={"when": object()})
    assert target.read_bytes() == before


def test_inconsistent_inference_settings_are_not_saved(tmp_path):
    model = build_model(small_config(), seed=0)
    wrong = InferenceSettings(emotion_thresholds={"emotic": (0.5,) * 26})
    with pytest.raises(ValueError, match="category sets"):
        save_model_file(tmp_path / "m.pt", model, inference=wrong)
    assert not list(tmp_path.iterdir())


class WritesMarker:
    """Unpickling this object would create a file: a stand-in for code in a model file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def bad_files(tmp_path, original):
    """name -> (path, expected text in the error)."""
    files = {}
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(original.read_bytes()[: original.stat().st_size // 2])
    files["truncated"] = (truncated, "truncated or corrupted")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator()
                                    .manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    files["random bytes"] = (noise, "PyTorch file")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    files["empty"] = (empty, "PyTorch file")
    plain = tmp_path / "plain.pt"
    torch.save(build_model(small_config(), seed=0).backbone.state_dict(), plain)
    files["plain state_dict"] = (plain, "plain state_dict")
    foreign = tmp_path / "foreign.pt"
    torch.save({"epoch": 10, "optimizer": {"lr": 0.1}}, foreign)
    files["foreign dict"] = (foreign, "not a caer_ros model file")
    other = tmp_path / "other.pt"
    torch.save({"format": "yolo.model", "version": 1}, other)
    files["other format"] = (other, "format 'yolo.model'")
    newer = tmp_path / "newer.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1}, newer)
    files["newer version"] = (newer, f"version {VERSION + 1} is newer")
    a_list = tmp_path / "list.pt"
    torch.save([1, 2, 3], a_list)
    files["a list"] = (a_list, "holds a list")
    return files


def test_bad_files_raise_one_error_naming_the_file(tmp_path, saved):
    _, original, _ = saved
    cases = bad_files(tmp_path, original)
    cases["missing"] = (tmp_path / "absent.pt", "no such file")
    cases["directory"] = (tmp_path, "directory")
    for name, (path, expected) in cases.items():
        with pytest.raises(ModelFileError) as error:
            load_model_file(path)
        message = str(error.value)
        assert message.startswith(f"{path}: "), name
        assert expected in message, (name, message)
        assert "\n" not in message, name
        assert isinstance(error.value, ValueError)


def test_code_in_a_file_is_never_run(tmp_path):
    marker = tmp_path / "marker"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"format": FORMAT, "payload": WritesMarker(marker)}))
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": FORMAT, "version": 1, "payload": WritesMarker(marker)}, zipped)
    assert not marker.exists()
    for path in (raw, zipped):
        with pytest.raises(ModelFileError) as error:
            load_model_file(path)
        assert str(error.value).startswith(f"{path}: ")
        assert not marker.exists()
    assert "refused" in str(error.value)  # the zip names the forbidden global


def test_incompatible_state_dict_is_refused(tmp_path, saved):
    _, original, _ = saved
    data = torch.load(original, weights_only=True)
    data["state_dict"]["emotion.mixed.emotic.0.weight"] = torch.zeros(27, 8, 1, 1)
    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save(data, wrong_shape)
    with pytest.raises(ModelFileError, match=r"'emotion.mixed.emotic.0.weight' has "
                                             r"shape \(27, 8, 1, 1\).*\(26, 8, 1, 1\)"):
        load_model_file(wrong_shape)
    del data["state_dict"]["backbone.conv1.weight"]
    missing = tmp_path / "missing_key.pt"
    torch.save(data, missing)
    with pytest.raises(ModelFileError, match="1 missing .*backbone.conv1.weight"):
        load_model_file(missing)
    data = torch.load(original, weights_only=True)
    data["config"]["backbone"] = "hrnet_w64"
    bad_config = tmp_path / "bad_config.pt"
    torch.save(data, bad_config)
    with pytest.raises(ModelFileError, match="invalid config: unknown backbone preset"):
        load_model_file(bad_config)
    data = torch.load(original, weights_only=True)
    data["inference"]["extraction"] = "magic"
    bad_settings = tmp_path / "bad_settings.pt"
    torch.save(data, bad_settings)
    with pytest.raises(ModelFileError, match="invalid inference settings: extraction"):
        load_model_file(bad_settings)


def test_files_from_before_head_layout_read_as_shared_heads(tmp_path):
    """Model files written before ``head_layout`` existed had the KA-style shared heads."""
    model = build_model(small_config(head_layout="shared"), seed=2).eval()
    path = save_model_file(tmp_path / "old.pt", model)
    data = torch.load(path, weights_only=True)
    del data["config"]["head_layout"]
    torch.save(data, path)
    loaded, info = load_model_file(path)
    assert info.config.head_layout == "shared"
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
