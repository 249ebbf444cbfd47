"""``python -m caer_ros.export --model M.pt --out M.onnx``: see :mod:`caer_ros.inference.export`."""

from __future__ import annotations

import sys

from caer_ros.inference.export import main

if __name__ == "__main__":
    sys.exit(main())
