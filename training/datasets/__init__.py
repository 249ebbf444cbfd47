"""Dataset loaders: every loader returns the same :class:`ImageRecord` list.

- :mod:`training.datasets.records`: the plain per-image / per-person structures and the load report.
- :mod:`training.datasets.emotic`: EMOTIC ``Annotations/Annotations.mat``.
- :mod:`training.datasets.heco`: HECO ``HECO_Labels.csv`` and the KA paper's partition.
- :mod:`training.datasets.splits`: the one definition of each dataset's train / val / test split
  (:func:`~training.datasets.splits.load_split`), read by training, the evaluator and the
  benchmarks.
- :mod:`training.datasets.synthetic`: a small generated dataset in EMOTIC's (and HECO's) on-disk
  format, for tests and smoke runs; :mod:`training.datasets.synthetic_variants`: masked copies
  of such a set and the knowledge-amalgamation teachers' sets drawn like it.
- :mod:`training.datasets.frames`: the unlabelled frame pool (image folders and video frames,
  no annotations) for label-free distillation and model comparison, split by image / video chunk.
"""

from training.datasets.emotic import load_emotic
from training.datasets.heco import heco_partition, load_heco
from training.datasets.records import ImageRecord, LoadReport, PersonRecord, SkippedPerson

__all__ = [
    "ImageRecord",
    "LoadReport",
    "PersonRecord",
    "SkippedPerson",
    "heco_partition",
    "load_emotic",
    "load_heco",
]
