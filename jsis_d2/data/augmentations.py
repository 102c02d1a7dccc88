"""Geometric augmentations of JSIS-Net: fixed-size resize (paper) and horizontal flip."""

from typing import List

from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T

from ..config import ConfigError

__all__ = ["build_augmentations", "FixedSizeResize"]


class FixedSizeResize(T.Resize):
    """``T.Resize`` to a fixed (H, W) that returns a ``NoOpTransform`` when the image already
    has that size (skips a needless copy through PIL)."""

    def get_transform(self, image):
        if tuple(image.shape[:2]) == tuple(self.shape):
            return T.NoOpTransform()
        return super().get_transform(image)


def build_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """Augmentations from the config, applied to the image, the panoptic map and the masks:
    Detectron2's (``ResizeShortestEdge`` from ``INPUT.MIN/MAX_SIZE_*``, and when training a
    ``RandomFlip`` per ``INPUT.RANDOM_FLIP``), with ``INPUT.JSIS.FIXED_SIZE = [H, W]`` (unless
    ``[]``) resizing every image to exactly H x W instead (aspect ratio not kept; paper: COCO
    400x400, Mapillary 512x1024). Image bilinear, labels nearest. ConfigError on bad values.
    """
    size = list(cfg.INPUT.JSIS.FIXED_SIZE)
    if size and (len(size) != 2 or any(int(s) <= 0 for s in size)):
        raise ConfigError(f"INPUT.JSIS.FIXED_SIZE must be [H, W] with H, W > 0, got {size}")
    flip = cfg.INPUT.RANDOM_FLIP
    if is_train and flip not in ("horizontal", "vertical", "none"):
        raise ConfigError(
            f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {flip!r}"
        )
    augs = d2_utils.build_augmentation(cfg, is_train)  # [ResizeShortestEdge, RandomFlip?]
    if size:
        augs[0] = FixedSizeResize((int(size[0]), int(size[1])))
    return augs
