"""COCO-panoptic-format datasets (COCO, Mapillary Vistas, synthetic, custom): one loader and
one registration function. On disk: a folder of images, a folder of panoptic PNGs (segment
id = R + 256 G + 256^2 B, 0 = void) and a JSON with ``images``, ``annotations`` (one per
image: ``image_id``, ``file_name`` of the PNG, ``segments_info``) and ``categories``.

Dataset dicts use CONTIGUOUS category indices (:mod:`jsis_d2.data.label_space`); dataset
category ids stay in the files.
"""

import functools
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from ..dataset_mapper import BadSampleError
from ..label_space import LabelSpace
from ..panoptic_format import check_annotations, first_duplicate
from .image_index import DuplicateImageError, ImageNotFoundError, index_images

__all__ = ["DatasetNotFoundError", "load_panoptic_json", "register_panoptic_dataset"]

logger = logging.getLogger(__name__)
#: Images skipped for unknown category ids that are logged one by one (then only counted).
_LOG_FIRST = 10


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset whose files are not on disk; the message says how to get them."""


def _require(path: str, what: str, hint: str, isdir: bool):
    ok = PathManager.isdir(path) if isdir else PathManager.isfile(path)
    if not ok:
        msg = f"{what} not found: {path}"
        if not os.path.isabs(path):
            msg += f" (absolute: {os.path.abspath(path)})"
        if hint:
            msg += f"\n{hint}"
        raise DatasetNotFoundError(msg)


def _read_json(panoptic_json: str) -> Dict:
    with PathManager.open(panoptic_json) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"panoptic JSON {panoptic_json} does not parse: {e}") from None


def _check_entries(data: Dict, panoptic_json: str) -> None:
    """ValueError (one line naming ``panoptic_json``) for what would pair a PNG with the wrong
    image: an image id or image file used twice in ``images``, and the annotation checks
    (:func:`~jsis_d2.data.panoptic_format.check_annotations`); segments need id, category_id."""
    images = data.get("images", [])
    if not isinstance(images, list) or not all(isinstance(e, dict) for e in images):
        raise ValueError(f"panoptic JSON {panoptic_json}: 'images' must be a list of objects")
    anns = check_annotations(data["annotations"], panoptic_json)
    for ann in anns:
        for i, seg in enumerate(ann["segments_info"]):
            if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
                raise ValueError(
                    f"{panoptic_json}: segment #{i} of image_id {ann['image_id']!r} "
                    f"({ann['file_name']}) needs 'id' and 'category_id' (got {seg!r:.80})"
                )
    dup = first_duplicate(images, "id")
    if dup:
        raise ValueError(
            f"{panoptic_json}: image id {dup[0]!r} appears in {len(dup[1])} 'images' entries "
            "(each image needs its own id)"
        )
    dup = first_duplicate(images, "file_name")
    if dup:
        owners = " and ".join(map(repr, dup[1]))
        raise ValueError(f"{panoptic_json}: image file {dup[0]} is used by images {owners}")


def load_panoptic_json(
    panoptic_json: str,
    image_root: str,
    panoptic_root: str,
    label_space: LabelSpace,
    missing_hint: str = "",
    skip_unknown_categories: bool = False,
    dataset_name: str = "",
) -> List[Dict]:
    """Load a COCO-panoptic-format dataset as Detectron2 dataset dicts.

    Image files and sizes come from the JSON ``images`` entries (any extension); an image
    without one is the PNG's stem + ".jpg", its size read from the file header. Image ids may
    be ints or strings (Cityscapes). Images are directly in ``image_root`` or in its
    sub-folders (one per city in Cityscapes): :func:`~jsis_d2.data.datasets.image_index.
    index_images`.
    ``skip_unknown_categories`` (the training loader's, under ``DATALOADER.SKIP_BAD_SAMPLES``)
    drops, with a warning counting them, the images with a segment of a category id not in
    ``label_space`` instead of raising; ``dataset_name`` is named when it drops them all.

    Returns:
        list of dicts: "file_name", "image_id" (as in the JSON), "height", "width" (original),
        "pan_seg_file_name", "segments_info": list of {"id", "category_id" (contiguous),
        "iscrowd", "isthing", plus "area" and "bbox" (XYWH) copied from the JSON when present}.
    Raises:
        DatasetNotFoundError: the JSON or a folder is missing (message: path + ``missing_hint``);
            an image is in none of the sub-folders of ``image_root`` (one line).
        ValueError (one line naming ``panoptic_json``): the JSON does not parse or has no
            "annotations"; an unknown category id (names the PNG and the ids); an image file
            name in two sub-folders of ``image_root``; see :func:`_check_entries`.
        BadSampleError: ``skip_unknown_categories`` dropped every image.
    """
    _require(panoptic_json, "panoptic JSON", missing_hint, isdir=False)
    _require(image_root, "image folder", missing_hint, isdir=True)
    _require(panoptic_root, "panoptic PNG folder", missing_hint, isdir=True)
    data = _read_json(panoptic_json)
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"panoptic JSON {panoptic_json} has no 'annotations' list")
    _check_entries(data, panoptic_json)
    images = {img["id"]: img for img in data.get("images", [])}
    try:
        image_paths = index_images(
            image_root, [_image_entry(ann, images)["file_name"] for ann in data["annotations"]]
        )
    except ImageNotFoundError as e:
        raise DatasetNotFoundError(f"{panoptic_json}: {e}") from None
    except DuplicateImageError as e:
        raise ValueError(f"{panoptic_json}: {e}") from None

    ret, unknown = [], []
    for ann in data["annotations"]:
        try:
            ret.append(_dataset_dict(ann, images, image_paths, panoptic_root, label_space))
        except _UnknownCategory as e:
            if not skip_unknown_categories:
                raise ValueError(f"{panoptic_json}: {e}") from None
            unknown.append(f"{panoptic_json}: {e}")
            if len(unknown) <= _LOG_FIRST:
                logger.warning("Skipping an image: %s", unknown[-1])
    if unknown:
        logger.warning(
            "Skipped %d of %d images of %s with unknown category ids "
            "(DATALOADER.SKIP_BAD_SAMPLES=True)%s",
            len(unknown),
            len(data["annotations"]),
            panoptic_json,
            f"; the first {_LOG_FIRST} are listed above" if len(unknown) > _LOG_FIRST else "",
        )
    if not ret and unknown:
        raise BadSampleError(
            f"no usable training sample in {dataset_name or panoptic_json}: all {len(unknown)} "
            f"images have unknown category ids (DATALOADER.SKIP_BAD_SAMPLES=True skipped each "
            f"one); the first: {unknown[0]}"
        )
    if not ret:
        raise ValueError(f"panoptic JSON {panoptic_json} has no annotations")
    logger.info("Loaded %d images in COCO panoptic format from %s", len(ret), panoptic_json)
    return ret


class _UnknownCategory(Exception):
    pass


def _image_entry(ann: Dict, images: Dict) -> Dict:
    """The ``images`` entry of an annotation; without one, the PNG's stem + ".jpg"."""
    return images.get(ann["image_id"]) or {
        "file_name": os.path.splitext(ann["file_name"])[0] + ".jpg"
    }


def _dataset_dict(ann, images, image_paths, panoptic_root, label_space) -> Dict:
    """One annotation -> one dataset dict (see :func:`load_panoptic_json`); ``image_paths``:
    image file name -> path (:func:`index_images`)."""
    image_id = ann["image_id"]
    pan_file = os.path.join(panoptic_root, ann["file_name"])
    img = _image_entry(ann, images)
    image_file = image_paths[img["file_name"]]
    height, width = img.get("height"), img.get("width")
    segments = []
    for s in ann["segments_info"]:
        try:
            k = label_space.to_contiguous(s["category_id"])
        except KeyError:
            raise _UnknownCategory(
                f"segment {s.get('id')} of {pan_file} has unknown category id "
                f"{s['category_id']} (known ids: {sorted(label_space.dataset_ids)})"
            ) from None
        seg = {
            "id": int(s["id"]),
            "category_id": k,
            "iscrowd": int(s.get("iscrowd", 0)),
            "isthing": label_space.is_thing[k],
        }
        seg.update({key: s[key] for key in ("area", "bbox") if key in s})
        segments.append(seg)
    if height is None or width is None:
        with PathManager.open(image_file, "rb") as fi:
            width, height = Image.open(fi).size  # header only
    return {
        "file_name": image_file,
        "image_id": image_id,
        "height": int(height),
        "width": int(width),
        "pan_seg_file_name": pan_file,
        "segments_info": segments,
    }


def register_panoptic_dataset(
    name: str,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    categories: Optional[Sequence[Dict]] = None,
    missing_hint: str = "",
) -> None:
    """Register a COCO-panoptic-format dataset as ``name`` with Detectron2 (loading is lazy);
    registering a name again replaces its registration.

    Args:
        categories: dataset categories (dicts with ``id``, ``name``, ``isthing``, optional
            ``color``). None: read them from ``panoptic_json`` now (the file must exist).
        missing_hint: appended to the error raised when the files are missing at load time.
    Metadata: :meth:`LabelSpace.metadata`, the three paths, ``ignore_label`` 255 (semantic
    target of void pixels), ``label_divisor`` 1000 (Detectron2's panoptic id = class * 1000
    + instance) and ``evaluator_type`` "jsis_panoptic".
    """
    where = "categories"
    if categories is None:
        _require(panoptic_json, "panoptic JSON (categories=None reads them from it)", "", False)
        data = _read_json(panoptic_json)
        categories = data.get("categories") if isinstance(data, dict) else None
        if not categories:
            raise ValueError(f"panoptic JSON {panoptic_json} has no 'categories'")
        where = panoptic_json
    try:
        label_space = LabelSpace(categories)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # a partial, not a lambda: the training loader calls it with skip_unknown_categories=True
    # (jsis_d2.data.build.train_dataset_dicts)
    DatasetCatalog.register(
        name,
        functools.partial(
            load_panoptic_json,
            panoptic_json,
            image_root,
            panoptic_root,
            label_space,
            missing_hint,
            dataset_name=name,
        ),
    )
    MetadataCatalog.get(name).set(
        **label_space.metadata(),
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        ignore_label=255,
        label_divisor=1000,
        evaluator_type="jsis_panoptic",
    )
