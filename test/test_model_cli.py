"""``python -m caer_ros.model``: writes a loadable untrained model file, deterministically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from caer_ros.labels import EMOTIC, HECO
from caer_ros.model import load_model_file
from caer_ros.model.__main__ import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "hrnet_w18_small", "--input-size", "64", "--no-pc-bg"]


def test_writes_a_file_that_loads(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main([*SMALL, "--categories", "heco,emotic", "--continuous", "--out", str(out),
                 "--seed", "4"]) == 0
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary
    assert "M parameters" in summary and "heco (8), emotic (26)" in summary
    model, info = load_model_file(out)
    assert info.config.categories == {"heco": HECO, "emotic": EMOTIC}
    assert info.config.continuous and info.config.input_size == (64, 64)
    assert model.person_centric is None and model.background is None
    assert info.meta == {"trained": False, "seed": 4, "created_by": info.meta["created_by"]}
    assert info.inference.emotion_thresholds["heco"] == (0.5,) * 8
    with torch.no_grad():
        out_maps = model(torch.zeros(1, 3, 64, 64))
    assert out_maps.quarter.emotions["heco"].shape == (1, 8, 16, 16)


def test_same_seed_same_weights(tmp_path):
    paths = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        paths[name] = tmp_path / f"{name}.pt"
        main([*SMALL, "--categories", "emotic", "--out", str(paths[name]), "--seed", seed])
    a, b, c = (torch.load(paths[n], weights_only=True)["state_dict"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--preset", "hrnet_w99", "--categories", "emotic"], "'hrnet_w99'"),
        (["--preset", "benet", "--categories", "emotions"], "'emotions'"),
        (["--preset", "benet", "--categories", "emotic", "--input-size", "100"], "'100'"),
        (["--preset", "benet", "--categories", "emotic", "--seed", "x"], "'x'"),
    ],
)
def test_bad_arguments_name_the_value(tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "m.pt")])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_runs_as_a_module(tmp_path):
    out = tmp_path / "m.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "caer_ros.model", *SMALL, "--categories", "emotic",
         "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: untrained hrnet_w18_small")
    load_model_file(out)
