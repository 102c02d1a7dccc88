"""Reading an image file as the uint8 array the model takes, including 16-bit files.

Detectron2's ``read_image`` converts with PIL's ``convert("RGB")``, which clips high-bit-depth
grayscale modes ("I;16", "I", "F", ...) at 255: a 16-bit image becomes (nearly) all white.
Here 16-bit and 32-bit integer ("I", which Pillow uses for some 16-bit files) values in
0..65535 are divided by 257 (rounded): by the TYPE's range, not the image's, so a sensor value
gives the same input at training and at inference and a dark image stays dark (12-bit data in
a 16-bit file comes out dark). "F" floats (no range convention) and "I" values outside
0..65535 raise :class:`UnsupportedImageError` naming the file. Every other mode (RGB, L, P,
RGBA, 16-bit RGB PNGs, ...) goes through Detectron2's own conversion unchanged.
"""

import numpy as np
from PIL import Image

from detectron2.data import detection_utils as d2_utils
from detectron2.utils.file_io import PathManager

__all__ = ["read_image", "UnsupportedImageError", "to_8bit"]

#: Pillow modes with more than 8 bits per sample and a single channel.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I", "F")


class UnsupportedImageError(ValueError):
    """An image file whose pixel type cannot be turned into 8 bits without guessing."""


def to_8bit(image: Image.Image, file_name: str = "image") -> Image.Image:
    """A high-bit-depth single-channel PIL image -> mode "L" (uint8), scaled by the type's
    range (module docstring); other modes are returned unchanged."""
    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return image
    values = np.asarray(image)
    if image.mode == "F" or values.dtype.kind == "f":
        raise UnsupportedImageError(
            f"image {file_name} has 32-bit float pixels (PIL mode 'F'), whose range has no "
            "convention; save it as 8-bit or 16-bit"
        )
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise UnsupportedImageError(
            f"image {file_name} has {image.mode!r} pixels in {lo}..{hi}, outside the 16-bit "
            "range 0..65535; save it as 8-bit or 16-bit"
        )
    scaled = (values.astype(np.uint32) + 128) // 257  # 0..65535 -> 0..255, rounded
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """Like Detectron2's ``read_image`` (EXIF orientation, then conversion to ``format``):
    uint8 [H, W, C] (C = 3 for "RGB"/"BGR"), with 16-bit files scaled to 8 bits. An image over
    Pillow's pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``, a decompression-bomb guard whose
    error is not an OSError) is an :class:`UnsupportedImageError` naming the file."""
    with PathManager.open(file_name, "rb") as f:
        try:
            image = Image.open(f)
            image = d2_utils._apply_exif_orientation(image)  # d2's fix for Pillow's EXIF
            return d2_utils.convert_PIL_to_numpy(to_8bit(image, file_name), format)
        except Image.DecompressionBombError as e:
            raise UnsupportedImageError(
                f"image {file_name} is over Pillow's pixel limit ({e}); raise "
                "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
            ) from None
