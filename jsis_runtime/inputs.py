"""The images of a prediction job: ``--input`` files, folders and globs, or a COCO image-info
JSON (``--image-info image_info_test-dev2017.json --image-root DIR``).

Each image becomes an :class:`ImageItem`: its id (what ``predictions.json`` calls
``image_id``), its path, and the name of its PNG under ``OUT/panoptic`` (distinct for
distinct images, the same for the same inputs: what makes a rerun resume).
"""

import glob
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence, Union

from .errors import RuntimeUsageError

__all__ = [
    "IMAGE_EXTS",
    "ImageItem",
    "expand_inputs",
    "png_names",
    "png_names_below_common_folder",
    "items_from_inputs",
    "items_from_image_info",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageItem:
    """One image to predict.

    Attributes:
        image_id: int or str. From an image-info file: its ``id``; from ``--input``: the PNG
            name without ".png" (the path relative to the inputs' common folder).
        path: the image file.
        name: the PNG's relative path under ``OUT/panoptic`` (may contain folders).
    """

    image_id: Union[int, str]
    path: str
    name: str


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, folders (their images by extension, sorted; not recursive) and glob patterns
    -> image paths, each file once (the first time it appears).

    Raises RuntimeUsageError naming an input that is no file, folder or matching pattern."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(item, f))
            )
        elif os.path.isfile(item):
            paths.append(item)
        else:
            matched = sorted(p for p in glob.glob(os.path.expanduser(item)) if os.path.isfile(p))
            if not matched:
                raise RuntimeUsageError(f"--input {item!r}: no such file, folder or pattern")
            paths += matched
    seen, unique = set(), []
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            unique.append(p)
    return unique


def png_names(relative_paths: Sequence[str]) -> List[str]:
    """Distinct relative image paths -> distinct PNG names: the extension replaced by
    ".png", kept (``x.jpg.png``) where two images would otherwise get the same name."""
    rel = [os.path.normpath(r).replace(os.sep, "/") for r in relative_paths]
    names = [os.path.splitext(r)[0] + ".png" for r in rel]
    while True:  # distinct relative paths + ".png" are distinct: this ends
        counts = Counter(names)
        clashing = [i for i, n in enumerate(names) if counts[n] > 1]
        if not clashing:
            return names
        for i in clashing:
            names[i] = rel[i] + ".png"


def png_names_below_common_folder(paths: Sequence[str]) -> List[str]:
    """Image paths -> distinct PNG names (:func:`png_names`) of their paths below the inputs'
    common folder (``/d/a/x.jpg``, ``/d/b/x.jpg`` -> ``a/x.png``, ``b/x.png``); the same
    names for the same inputs. ``[]`` for no path."""
    absolute = [os.path.abspath(p) for p in paths]
    if not absolute:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return png_names([os.path.relpath(p, root) for p in absolute])


def items_from_inputs(inputs: Sequence[str]) -> List[ImageItem]:
    """:func:`expand_inputs`, each image named by its path below the inputs' common folder
    (``a/img0.jpg`` and ``b/img0.jpg`` -> ids ``a/img0``, ``b/img0``; PNGs ``a/img0.png``,
    ``b/img0.png``)."""
    paths = expand_inputs(inputs)
    if not paths:
        raise RuntimeUsageError(f"--input {' '.join(inputs)}: no image found")
    names = png_names_below_common_folder(paths)
    return [ImageItem(n[: -len(".png")], p, n) for p, n in zip(paths, names)]


def items_from_image_info(image_info: str, image_root: str) -> List[ImageItem]:
    """The images of a COCO image-info JSON (``{"images": [{"id", "file_name", ...}]}``, as
    ``image_info_test-dev2017.json`` or a panoptic ground-truth JSON), in its order, under
    ``image_root``.

    Raises RuntimeUsageError (naming the file and the entry) for a missing or unparsable
    file, a missing ``images`` list, an entry without ``id`` / ``file_name``, an id that is
    neither int nor str, or a duplicate id or file name. Missing image FILES are not errors
    here: the job skips and names them.
    """
    try:
        with open(image_info, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise RuntimeUsageError(f"--image-info {image_info}: cannot read it as JSON: {e}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise RuntimeUsageError(f"--image-info {image_info}: no 'images' list (or it is empty)")
    if not os.path.isdir(image_root):
        raise RuntimeUsageError(f"--image-root {image_root}: no such folder")
    ids, files = [], []
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise RuntimeUsageError(
                f"--image-info {image_info}: images[{i}] needs 'id' and 'file_name': {img!r:.80}"
            )
        iid, fn = img["id"], img["file_name"]
        if isinstance(iid, bool) or not isinstance(iid, (int, str)):
            raise RuntimeUsageError(
                f"--image-info {image_info}: images[{i}] has id {iid!r}: expected int or str"
            )
        if not isinstance(fn, str) or not fn or os.path.isabs(fn) or ".." in fn.split("/"):
            raise RuntimeUsageError(
                f"--image-info {image_info}: images[{i}] has file_name {fn!r}: expected a "
                "path relative to --image-root"
            )
        ids.append(iid)
        files.append(fn)
    for what, values in (("id", ids), ("file_name", files)):
        dup = [v for v, n in Counter(values).items() if n > 1]
        if dup:
            raise RuntimeUsageError(f"--image-info {image_info}: duplicate {what} {dup[0]!r}")
    names = png_names(files)
    return [
        ImageItem(iid, os.path.join(image_root, fn), n) for iid, fn, n in zip(ids, files, names)
    ]
