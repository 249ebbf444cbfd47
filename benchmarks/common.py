"""Shared helpers of the benchmark scripts: timing medians, JSON output, a real test photo."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from caer_ros.atomic_file import atomic_write


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` calls, milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def photo(width: int = 640, height: int = 480) -> np.ndarray:
    """scikit-image's astronaut photo (shipped in its wheel) as BGR uint8, resized."""
    import cv2
    from skimage import data

    rgb = data.astronaut()
    return cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (width, height),
                      interpolation=cv2.INTER_AREA)


def format_table(rows: list[tuple[str, ...]]) -> str:
    """``rows`` (the first: the header) as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def rounded(value: float | None, digits: int = 2) -> float | None:
    """``value`` rounded for a figures file; None for a missing or non-finite value."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def machine() -> dict[str, object]:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}


def write_json(path: str | None, figures: dict[str, object]) -> None:
    """Print the figures and, with a path, save them as JSON (atomic write)."""
    print(json.dumps(figures, indent=2))
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as stream:
            stream.write((json.dumps(figures, indent=2) + "\n").encode())
        print(f"figures written to {target}")


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value) of the finite ``values``,
    rounded to 2 digits; ``(None, None)`` when there is none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), 2), round(spread, 2)


def paired(runs: dict[str, dict[int, dict[str, object]]], arm: str, key: str,
           control: str) -> tuple[float | None, float | None]:
    """Mean and standard deviation over seeds of ``arm`` minus ``control`` (the same seed's
    run) in ``key``; ``runs[arm][seed]`` holds one run's figures."""
    diffs = [runs[arm][s][key] - runs[control][s][key] for s in runs[arm]
             if s in runs[control] and runs[arm][s].get(key) is not None
             and runs[control][s].get(key) is not None]
    return mean_std(diffs)
