"""The authors' test-time path on two photos (``test/data/benet_reference/
pipeline_reference.json``, described in that folder's README.md): its cases, their weights,
and the port's tolerances (people matched by box, scores compared on the matched ones).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from helpers.benet_reference import DATA, rule_state_dict, write_archive_file

REFERENCE = DATA / "pipeline_reference.json"
LAYOUTS = {"keys_emotic.tsv": "emotic", "keys_emotic_heco.tsv": "emotic_heco"}


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def case_state_dict(case: dict) -> dict[str, torch.Tensor]:
    """The case's public state dict: the fixture rule, then the size-head bias additions (in
    float32, no extra draws)."""
    weights = case["weights"]
    state = rule_state_dict(LAYOUTS[weights["keys"]], weights["seed"])
    for key, values in weights["size_bias_addition"].items():
        state[key] = state[key] + torch.tensor(values, dtype=torch.float32)
    return state


def write_case_checkpoint(case: dict, path: Path) -> Path:
    """The case's weights as the archive's ``checkpoint.pth.tar`` (optimizer state and all)."""
    return write_archive_file(case_state_dict(case), "checkpoint", path)


def case_image(entry: dict) -> np.ndarray:
    """The reference photo (RGB uint8, as scikit-image gives it), checked against its hash."""
    from skimage import data

    image = getattr(data, entry["image"])()
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    assert digest == entry["pixels_sha256"], f"{entry['image']}: not the reference pixels"
    return image


@dataclass
class Comparison:
    """How a port's people compare with the reference people of one image."""

    matched: int  # reference people with a port person whose four corners are within tolerance
    reference: int
    box_error: float  # largest corner difference over the matched pairs (px)
    score_error: float  # largest detection-score difference over the matched pairs
    emotion_error: float  # largest emotion-probability difference (every set) over them

    def describe(self) -> str:
        return (f"{self.matched}/{self.reference} matched, corners within "
                f"{self.box_error:.3f} px, detection scores {self.score_error:.2e}, "
                f"emotions {self.emotion_error:.2e}")


def compare(people: list[dict], got_boxes: np.ndarray, got_detection: np.ndarray,
            got_sets: dict[str, np.ndarray], box_px: float) -> Comparison:
    """Match the reference ``people`` to the port's (boxes (N, 4) in image pixels, detection
    scores (N,), set name -> (N, E) probabilities) greedily by box, smallest largest-corner
    difference first; a pair matches when every corner is within ``box_px``."""
    ref_boxes = np.array([p["box"] for p in people], dtype=np.float64).reshape(-1, 4)
    got_boxes = np.asarray(got_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(got_boxes):
        return Comparison(0, len(people), 0.0, 0.0, 0.0)
    distance = np.abs(ref_boxes[:, None, :] - got_boxes[None, :, :]).max(axis=2)
    pairs = []
    used_ref, used_got = set(), set()
    for flat in np.argsort(distance, axis=None, kind="stable"):
        r, g = np.unravel_index(flat, distance.shape)
        if distance[r, g] > box_px:
            break
        if r in used_ref or g in used_got:
            continue
        used_ref.add(r)
        used_got.add(g)
        pairs.append((int(r), int(g)))
    box = max((distance[r, g] for r, g in pairs), default=0.0)
    score = max((abs(people[r]["detection_score"] - float(got_detection[g])) for r, g in pairs),
                default=0.0)
    emotion = 0.0
    for name, values in got_sets.items():
        for r, g in pairs:
            if name in people[r]:
                emotion = max(emotion, float(np.abs(np.asarray(people[r][name])
                                                    - values[g]).max()))
    return Comparison(len(pairs), len(people), float(box), float(score), emotion)
