"""Checks of the COCO panoptic JSON format shared by the dataset loader and the PQ evaluation:
one home for what makes an ``annotations`` list usable (pure Python, no detectron2)."""

from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["check_annotations", "first_duplicate"]


def first_duplicate(entries: Sequence[Dict], key: str, other: str = "id") -> Optional[Tuple]:
    """(value, [``other`` of each entry with it]) of the first ``key`` value shared by several
    entries; None if there is none."""
    seen = {}
    for e in entries:
        seen.setdefault(e.get(key), []).append(e.get(other))
    return next(((v, owners) for v, owners in seen.items() if len(owners) > 1), None)


def check_annotations(annotations, path: str, error=ValueError) -> List[Dict]:
    """``annotations`` of the panoptic JSON ``path``: a list of objects with ``image_id``,
    ``file_name`` (str) and a ``segments_info`` list; no image id and no PNG used twice
    (either would pair a PNG with another image's pixels). Errors: ``error`` with one line
    naming ``path``. Returns ``annotations``."""
    if not isinstance(annotations, list):
        raise error(
            f"{path}: 'annotations' must be a list of objects, got {type(annotations).__name__}"
        )
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise error(
                f"{path}: annotation #{i} ({ann!r:.60}) is not an object with 'image_id', "
                "'file_name' and 'segments_info'"
            )
        for key, typ in (("image_id", (int, str)), ("file_name", str), ("segments_info", list)):
            if not isinstance(ann.get(key), typ):
                raise error(
                    f"{path}: annotation of image_id {ann.get('image_id')!r} (#{i}, "
                    f"{ann.get('file_name')}) has no {key!r} "
                    f"{'list' if key == 'segments_info' else 'field'} (got {ann.get(key)!r:.60})"
                )
    dup = first_duplicate(annotations, "image_id", other="file_name")
    if dup:
        raise error(
            f"{path}: image_id {dup[0]!r} has {len(dup[1])} annotations (PNGs "
            f"{', '.join(map(str, dup[1]))}); one per image"
        )
    dup = first_duplicate(annotations, "file_name", other="image_id")
    if dup:
        raise error(
            f"{path}: panoptic PNG {dup[0]} is used by the annotations of image_id "
            f"{' and '.join(map(repr, dup[1]))}"
        )
    return annotations
