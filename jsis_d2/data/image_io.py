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

# The 8-bit conversion lives in the torch-free runtime (the ONNX backend reads images too).
from jsis_runtime.image_io import HIGH_BIT_DEPTH_MODES, UnsupportedImageError, to_8bit

from detectron2.data import detection_utils as d2_utils
from detectron2.utils.file_io import PathManager

__all__ = ["read_image", "UnsupportedImageError", "to_8bit", "HIGH_BIT_DEPTH_MODES"]


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
