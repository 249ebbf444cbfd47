"""Write an untrained model file: ``python -m caer_ros.model --preset benet --categories emotic
--out M.pt [--continuous] [--input-size 512] [--no-pc-bg] [--seed 0]``.

The weights depend on the seed alone, so the same command always writes the same weights.
"""

from __future__ import annotations

import argparse
import sys

from caer_ros.labels import category_set
from caer_ros.model.checkpoint import default_meta, save_model_file
from caer_ros.model.config import BACKBONE_PRESETS, ModelConfig, parse_input_size
from caer_ros.model.network import build_model
from caer_ros.model.params import parameter_counts


def _categories(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no category set in {text!r}")
    for name in names:
        try:
            category_set(name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"repeated category set in {text!r}")
    return names


def _input_size(text: str) -> tuple[int, int]:
    try:
        return parse_input_size(text, 32)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m caer_ros.model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(BACKBONE_PRESETS),
                        help="backbone preset")
    parser.add_argument("--categories", required=True, type=_categories,
                        help="category set(s): emotic, heco, or several comma-separated "
                             "(the first is the one the node reports)")
    parser.add_argument("--continuous", action="store_true",
                        help="add valence/arousal/dominance maps")
    parser.add_argument("--input-size", type=_input_size, default=(512, 512),
                        help="network input S or HxW (multiples of 32; default 512)")
    parser.add_argument("--no-pc-bg", action="store_true",
                        help="leave out the person-centric and background heads")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = ModelConfig(
        backbone=args.preset,
        categories={name: category_set(name) for name in args.categories},
        continuous=args.continuous,
        input_size=args.input_size,
        person_centric=not args.no_pc_bg,
        background=not args.no_pc_bg,
    )
    model = build_model(config, seed=args.seed)
    try:
        path = save_model_file(args.out, model, meta=default_meta(seed=args.seed))
    except OSError as error:
        print(f"error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return 1
    counts = parameter_counts(model)
    sets = ", ".join(f"{name} ({len(names)})" for name, names in config.categories.items())
    print(f"wrote {path}: untrained {args.preset}, {counts.total / 1e6:.2f} M parameters "
          f"(backbone {counts.backbone / 1e6:.2f} M), categories {sets}, "
          f"continuous {'yes' if config.continuous else 'no'}, "
          f"input {config.input_size[0]}x{config.input_size[1]}, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
