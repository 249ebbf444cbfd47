"""``python -m caer_ros.export --model M.pt --out M.onnx``: see :mod:`caer_ros.inference.export`."""

from __future__ import annotations

import sys

TORCH_NEEDED = ("error: exporting a model needs PyTorch (pip install torch); export on a machine "
                "with it and copy the .onnx file to the robot")


def main(argv: list[str] | None = None) -> int:
    try:
        from caer_ros.inference.export import main as export_main
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        print(TORCH_NEEDED, file=sys.stderr)
        return 1
    return export_main(argv)


if __name__ == "__main__":
    sys.exit(main())
