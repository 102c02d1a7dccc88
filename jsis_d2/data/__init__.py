"""Data: label space, dataset registration, mapper, synthetic dataset.

Importing this package registers every built-in dataset (lazily) with Detectron2.
"""

from .augmentations import build_augmentations  # noqa: F401
from .dataset_mapper import BadSampleError, JSISDatasetMapper  # noqa: F401
from .datasets import make_synthetic_datasets, register_synthetic_datasets  # noqa: F401
from .datasets.panoptic import register_panoptic_dataset  # noqa: F401
from .label_space import LabelSpace  # noqa: F401
from .synthetic import generate_synthetic_dataset  # noqa: F401
