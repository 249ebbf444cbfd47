"""Shared helpers of the benchmark scripts: their command lines (:func:`benchmark_parser`,
:func:`add_run_options`, :func:`arm_list`, :func:`seed_list`), timing medians, a real test
photo, the results table (:func:`format_table`), means and paired differences over seeds, JSON
output."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from caer_ros.atomic_file import atomic_write

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"  # the training configs the benchmarks train with


# --------------------------------------------------------------------------- command line


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first paragraph as the description, ``--json``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser


def add_run_options(parser: argparse.ArgumentParser, quick: str, threads: int | None = None,
                    progress: bool = False, overrides: str = "every arm") -> None:
    """The options of a benchmark that trains: ``--threads`` (default ``threads``),
    ``--quick`` (its help: ``quick``), progress bars (shown by default with ``progress``:
    ``--no-progress``; else ``--progress``) and the ``key=value`` training-config overrides of
    ``overrides``."""
    parser.add_argument("--threads", type=int, default=threads, help=(
        f"torch threads (default {threads}; 0: torch's default, one per core)" if threads
        else "torch threads (default: torch's, one per core; on a machine shared with other "
             "jobs 1 can be several times faster)"))
    parser.add_argument("--quick", action="store_true", help=quick)
    if progress:
        parser.add_argument("--no-progress", dest="progress", action="store_false",
                            help="no progress bars")
    else:
        parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"training-config overrides of {overrides}, e.g. optim.lr=2e-3")


def arm_list(parser: argparse.ArgumentParser, text: str, known: Sequence[str],
             control: str | None = None) -> list[str]:
    """The arms of ``--arms`` (``text``, comma-separated), each once: in the order given or,
    with a ``control`` (the arm the others are compared with, run whatever is asked), in
    ``known``'s order with the control among them. An unknown arm, or none without a control,
    is a usage error."""
    arms = list(dict.fromkeys(a for a in text.split(",") if a))
    unknown = sorted(set(arms) - set(known))
    if unknown or not (arms or control):
        parser.error(f"--arms: unknown {unknown}; known: {','.join(known)}")
    return arms if control is None else [a for a in known if a in arms or a == control]


def seed_list(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """The training seeds of ``--seeds`` (``text``, comma-separated integers), each once; none
    is a usage error."""
    try:
        seeds = list(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {text!r}")
    if not seeds:
        parser.error("--seeds: at least one seed")
    return seeds


def use_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``, unless ``threads`` is 0 or None (torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- figures


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


def finish(path: str | None, figures: dict[str, object], started: float,
           table: Callable[[dict[str, object]], str]) -> int:
    """The end of a run: ``figures["wall_s"]`` (seconds since ``started``, a
    ``time.perf_counter()``), the figures printed and saved (:func:`write_json`), then their
    ``table``; 0, the exit status."""
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(path, figures)
    print(table(figures))
    return 0


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
