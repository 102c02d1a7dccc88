"""JSIS-Net model parts: meta-architecture (JSISNet) and semantic head (PPMHead).

Importing this package registers ``JSISNet`` in Detectron2's ``META_ARCH_REGISTRY`` and
``PPMHead`` in ``SEM_SEG_HEADS_REGISTRY``.
"""

from .meta_arch import JSISNet
from .ppm_head import PPMHead

__all__ = ["JSISNet", "PPMHead"]
