"""``python -m training.evaluate``: the evaluator's command line
(:func:`training.evaluation.evaluate.main`; the module docstring there says what it does)."""

import sys

from training.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
