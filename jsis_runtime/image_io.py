"""Decoding an image file to the uint8 RGB array the models take, with Pillow only.

Same pixels as ``jsis_d2.data.image_io.read_image(path, "RGB")`` (Detectron2's reader plus
the project's 16-bit handling): the EXIF orientation is applied as Detectron2's
``_apply_exif_orientation`` does, 16-bit and 32-bit integer single-channel images are scaled
by the TYPE's range (values / 257, rounded), then ``convert("RGB")``. 32-bit float images
("F") and "I" values outside 0..65535 raise :class:`UnsupportedImageError`.
"""

import numpy as np
from PIL import Image

from .errors import UnreadableImageError

__all__ = [
    "HIGH_BIT_DEPTH_MODES",
    "UnsupportedImageError",
    "apply_exif_orientation",
    "to_8bit",
    "read_image_rgb",
]

#: Pillow modes with more than 8 bits per sample and a single channel.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I", "F")

_EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the transpose that makes the image upright (Detectron2's table).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class UnsupportedImageError(UnreadableImageError):
    """An image file whose pixel type cannot be turned into 8 bits without guessing."""


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """``image`` turned upright per its EXIF orientation tag (unchanged without one)."""
    try:
        exif = image.getexif()
    except Exception:
        return image
    method = _EXIF_TRANSPOSE.get(exif.get(_EXIF_ORIENTATION)) if exif else None
    return image.transpose(method) if method is not None else image


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


def read_image_rgb(path: str) -> np.ndarray:
    """The image file at ``path`` as uint8 RGB [H, W, 3] (module docstring).

    Raises:
        UnreadableImageError (one line naming ``path``): missing, truncated, not an image,
            or an unsupported pixel type.
    """
    try:
        with Image.open(path) as image:
            image = to_8bit(apply_exif_orientation(image), path)
            return np.asarray(image.convert("RGB"))
    except UnreadableImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(f"cannot read {path} as an image: {e}") from None
