"""jsis_d2: JSIS-Net (joint semantic and instance segmentation network) on Detectron2.

Importing the package applies the detectron2 0.6 compatibility shims (:mod:`jsis_d2.compat`)
and registers everything with Detectron2: the ``JSISNet`` meta-architecture, the ``PPMHead``
semantic head, and the datasets (names prefixed ``jsis_``).
"""

from . import compat  # noqa: F401  (first: it must run before anything imports detectron2)

# isort: split
from . import data, modeling  # noqa: F401  (registration side effects)
from .config import add_jsis_config, get_jsis_cfg, setup_cfg  # noqa: F401

__version__ = "0.1.0"
