"""COCO panoptic PNG codec: the one home for reading, writing and RGB <-> id.

Id space: one SEGMENT id per pixel, ``id = R + 256 * G + 256**2 * B`` (in [0, 2**24)),
``VOID`` (0) = unlabeled; ids name ``segments_info`` entries by their ``id`` field. As in
panopticapi, palette PNGs are converted to RGB and RGBA alpha is ignored; other modes are
errors. Errors are one line naming the file: :class:`PanopticPNGError` (a ``ValueError``),
:class:`MissingPanopticPNGError` (also a ``FileNotFoundError``) for a missing file.
"""

import numpy as np
from PIL import Image, UnidentifiedImageError

# The id <-> colour codec lives in the torch-free runtime, which writes the same PNGs.
from jsis_runtime.coco_panoptic import ID_LIMIT, encode_panoptic_png, id2rgb, rgb2id

from detectron2.utils.file_io import PathManager

__all__ = [
    "VOID",
    "ID_LIMIT",
    "PanopticPNGError",
    "MissingPanopticPNGError",
    "rgb2id",
    "id2rgb",
    "read_panoptic_png",
    "write_panoptic_png",
]

#: Segment id of void pixels (panopticapi ``VOID``).
VOID = 0


class PanopticPNGError(ValueError):
    """A file that cannot be read as a panoptic PNG (the message names it)."""


class MissingPanopticPNGError(PanopticPNGError, FileNotFoundError):
    """A panoptic PNG that does not exist."""

    def __str__(self):  # FileNotFoundError would otherwise format (errno, strerror)
        return str(self.args[0]) if self.args else ""


def read_panoptic_png(path: str, where: str = "", raw: bool = False) -> np.ndarray:
    """Decode a COCO panoptic PNG to its segment ids.

    Args:
        path: the PNG (any path ``PathManager`` opens). where: error prefix ("image 42").
        raw: return Pillow's 4-byte pixels unmasked: uint32 words whose low 24 bits are the
            id and whose high byte is padding or alpha. For callers that mask a few values
            instead of every pixel (the PQ evaluation masks its runs: 12 % of its time here).
    Returns:
        uint32 [H, W] ids ``R + 256 * G + 256**2 * B`` (alpha ignored, palette converted).
    Raises:
        MissingPanopticPNGError if the file does not exist; PanopticPNGError if it cannot be
        decoded or is not an RGB / RGBA / palette image.
    """
    prefix = f"{where}: " if where else ""
    try:
        with PathManager.open(path, "rb") as f, Image.open(f) as im:
            if im.mode == "P":
                im = im.convert("RGB")
            if im.mode not in ("RGB", "RGBA"):
                raise PanopticPNGError(
                    f"{prefix}panoptic PNG {path} has mode {im.mode!r}; expected RGB(A) colors "
                    "encoding segment ids (R + 256 G + 256^2 B)"
                )
            im.load()
            # 4 bytes per pixel (R, G, B, X or A): as little-endian uint32, the low 24 bits
            # are the id. One copy out of Pillow, cheaper than rgb2id(np.asarray(im)) (measured).
            rawmode = "RGBX" if im.mode == "RGB" else "RGBA"
            words = np.frombuffer(im.tobytes("raw", rawmode), dtype="<u4")
            shape = (im.size[1], im.size[0])
    except PanopticPNGError:
        raise
    except FileNotFoundError:
        raise MissingPanopticPNGError(f"{prefix}panoptic PNG not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise PanopticPNGError(f"{prefix}cannot read panoptic PNG {path}: {e}") from e
    return (words if raw else np.bitwise_and(words, ID_LIMIT - 1)).reshape(shape)


def write_panoptic_png(path: str, ids: np.ndarray) -> None:
    """Write integer segment ids [H, W] in [0, 2**24) as a COCO panoptic RGB PNG."""
    data = encode_panoptic_png(ids, where=path)  # ValueError naming ``path`` for bad ids
    with PathManager.open(path, "wb") as f:
        f.write(data)
