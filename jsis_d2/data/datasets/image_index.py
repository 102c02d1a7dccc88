"""Where the images of a panoptic dataset are: file name (as the JSON's ``images`` give it) ->
path under the image root, from ONE walk of that root.

Two layouts are supported, and any mix of them:

- flat: ``image_root/<file_name>`` (COCO, Mapillary Vistas, the synthetic set); a file name
  with a folder (``a/b.jpg``) is always taken as it is, ``image_root/a/b.jpg``;
- per-folder: ``image_root/<any sub-folders>/<file_name>`` while the JSON's ``file_name`` has
  no folder (Cityscapes: ``leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png``
  for the file name ``frankfurt_000000_000294_leftImg8bit.png``).

A bare file name resolves to ``image_root/<file_name>`` when that file exists, else to the one
file of that name in a sub-folder; the same name in two sub-folders is an error naming both
(the pairing of image and ground truth would be a guess). An image found nowhere: in a root without
sub-folders, ``image_root/<file_name>`` all the same (the dataset mapper reports it as a
missing image, skippable in training, as before); in a root with sub-folders, an error naming
the file and the root.
"""

import os
from typing import Dict, Iterable, List, Tuple

__all__ = ["DuplicateImageError", "ImageNotFoundError", "index_images"]


class ImageNotFoundError(FileNotFoundError):
    """An image of the JSON is neither at ``image_root/<file_name>`` nor in a sub-folder."""


class DuplicateImageError(ValueError):
    """An image's file name is in two or more sub-folders of the image root (and not at
    ``image_root/<file_name>``)."""


def _walk(image_root: str, wanted: set) -> Tuple[Dict[str, List[str]], int]:
    """One walk of ``image_root`` (following links, each real folder once).

    Returns ({base name: [paths relative to image_root]} for the files whose base name is in
    ``wanted``, the number of sub-folders seen)."""
    found: Dict[str, List[str]] = {}
    seen, subfolders = set(), 0
    for dirpath, dirnames, filenames in os.walk(image_root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up, or two links to one folder: walked once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()  # a deterministic order of the paths named in errors
        subfolders += len(dirnames)
        rel_dir = os.path.relpath(dirpath, image_root)
        prefix = "" if rel_dir == os.curdir else rel_dir + os.sep
        for name in wanted.intersection(filenames):
            found.setdefault(name, []).append(prefix + name)
    return found, subfolders


def index_images(image_root: str, file_names: Iterable[str]) -> Dict[str, str]:
    """{file name: image path} for each of ``file_names`` (see the module docstring).

    Args:
        image_root: the folder the dataset's images are in (directly or in sub-folders).
        file_names: the images' ``file_name`` as written in the JSON (relative to the root,
            with or without a sub-folder).
    Returns:
        the path of each file name: ``os.path.join(image_root, <relative path>)``.
    Raises:
        DuplicateImageError / ImageNotFoundError: one line naming the file and the root.
    """
    file_names = list(file_names)
    bare = {f for f in file_names if "/" not in f and os.sep not in f}  # no folder in it
    found, subfolders = _walk(image_root, bare) if bare else ({}, 0)
    out = {}
    for file_name in file_names:
        candidates = found.get(file_name, [])
        if file_name not in bare or file_name in candidates or not (candidates or subfolders):
            rel = file_name  # as before: image_root/<file_name>
        elif len(candidates) == 1:
            rel = candidates[0]
        elif candidates:
            raise DuplicateImageError(
                f"image {file_name} is in {len(candidates)} folders under the image root "
                f"{image_root}: {', '.join(candidates[:3])}{', ...' if len(candidates) > 3 else ''}"
                " (keep one, or write the file_name with its folder in the JSON)"
            )
        else:
            raise ImageNotFoundError(
                f"image {file_name} not found in the image root {image_root} nor in its "
                f"{subfolders} sub-folders"
            )
        out[file_name] = os.path.join(image_root, rel)
    return out
