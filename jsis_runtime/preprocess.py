"""The exported graph's ``image`` input from an RGB image: fixed-size resize, channel order.

The resize is the one the PyTorch model sees at test time (``INPUT.JSIS.FIXED_SIZE``:
``jsis_d2.data.augmentations.FixedSizeResize`` -> Detectron2's ``ResizeTransform``): for uint8
images Pillow's bilinear ``resize`` to (W_in, H_in), no resize when the size already matches.
Bilinear resampling works per channel, so resizing before or after the channel flip gives
the same bytes.
"""

from typing import Tuple

import numpy as np
from PIL import Image

__all__ = ["resize_bilinear", "network_input"]


def resize_bilinear(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3] for ``size`` = (h, w), with Pillow's bilinear
    filter (Detectron2's ``ResizeTransform.apply_image`` for uint8 images)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def network_input(image_rgb: np.ndarray, size: Tuple[int, int], fmt: str) -> np.ndarray:
    """The graph's ``image``: uint8 [H_in, W_in, 3], C-contiguous, channels in ``fmt``
    ("BGR" or "RGB") order, from uint8 RGB [H, W, 3] at any size.

    Raises ValueError naming the shape or dtype of a bad ``image_rgb``."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image_rgb.shape}")
    if image_rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image_rgb.dtype}")
    if fmt not in ("BGR", "RGB"):
        raise ValueError(f"input format must be 'BGR' or 'RGB', got {fmt!r}")
    resized = resize_bilinear(image_rgb, size)
    if fmt == "BGR":
        resized = resized[:, :, ::-1]
    return np.ascontiguousarray(resized)
