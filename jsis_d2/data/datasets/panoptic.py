"""COCO-panoptic-format datasets: one loader and one registration function for all of them.

A dataset in COCO panoptic format is three things: a folder of images, a folder of panoptic
PNGs (segment id = R + 256 G + 256^2 B, 0 = void) and a JSON with ``images``,
``annotations`` (one per image: ``image_id``, ``file_name`` of the PNG, ``segments_info``) and
``categories``. COCO panoptic, Mapillary Vistas, the synthetic dataset and any custom dataset
all go through :func:`register_panoptic_dataset`.

Dataset dicts (loader output) use CONTIGUOUS category indices (see
:mod:`jsis_d2.data.label_space`); dataset category ids stay in the files.
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
from ..label_space import LabelSpace, check_categories
from ..panoptic_format import check_annotations, first_duplicate

__all__ = [
    "IGNORE_LABEL",
    "LABEL_DIVISOR",
    "EVALUATOR_TYPE",
    "DatasetNotFoundError",
    "load_panoptic_json",
    "panoptic_metadata",
    "register_panoptic_dataset",
]

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255  # semantic target of void pixels (MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
LABEL_DIVISOR = 1000  # panoptic id = category * LABEL_DIVISOR + instance (d2 convention)
EVALUATOR_TYPE = "jsis_panoptic"


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
    """Refuse what would pair a PNG with the wrong image: duplicate ids or file names.

    Each image id appears once in ``images`` and once in ``annotations``; no two images share
    an image file and no two annotations share a PNG; every annotation has ``image_id``,
    ``file_name`` and a ``segments_info`` list. Errors are one line naming ``panoptic_json``.
    """
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
    first_duplicate(
        images,
        "id",
        lambda v, o: (
            f"{panoptic_json}: image id {v!r} appears in {len(o)} 'images' entries "
            "(each image needs its own id)"
        ),
    )
    first_duplicate(
        images,
        "file_name",
        lambda v, o: (
            f"{panoptic_json}: image file {v} is used by images {' and '.join(map(repr, o))}"
        ),
    )


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

    Image files come from the JSON ``images`` entries (``file_name``, ``height``,
    ``width``), so any image extension works; an image without such an entry falls back to
    the PNG's stem + ".jpg" and reads its size from the file header.

    Args:
        skip_unknown_categories: drop (with a warning counting them) the images that have a
            segment whose category id is not in ``label_space``, instead of raising. The
            training loader does this under ``DATALOADER.SKIP_BAD_SAMPLES``.
        dataset_name: names the dataset in the error raised when every image is dropped.
    Returns:
        list of dicts: "file_name", "image_id" (as in the JSON), "height", "width" (original),
        "pan_seg_file_name", "segments_info": list of {"id", "category_id" (contiguous),
        "iscrowd", "isthing", plus "area" and "bbox" (XYWH) copied from the JSON when present}.

    Raises:
        DatasetNotFoundError: the JSON or a folder is missing (message: path + ``missing_hint``).
        ValueError (one line naming ``panoptic_json``): the JSON does not parse or has no
            "annotations"; a segment with a category id unknown to ``label_space`` (names the
            PNG and the ids); an image id, image file or PNG used twice; an annotation without
            ``image_id``, ``file_name`` or ``segments_info``.
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

    ret, unknown = [], []
    for ann in data["annotations"]:
        try:
            ret.append(_dataset_dict(ann, images, image_root, panoptic_root, label_space))
        except _UnknownCategory as e:
            msg = (
                f"{panoptic_json}: segment {e.segment_id} of {e.pan_file} has unknown category "
                f"id {e.category_id} (known ids: {sorted(label_space.dataset_ids)})"
            )
            if not skip_unknown_categories:
                raise ValueError(msg) from None
            unknown.append(msg)
    if unknown:
        for msg in unknown[:_LOG_FIRST]:
            logger.warning("Skipping an image: %s", msg)
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


#: Images skipped for unknown category ids that are logged one by one (then only counted).
_LOG_FIRST = 10


class _UnknownCategory(Exception):
    def __init__(self, segment_id, category_id, pan_file):
        super().__init__(segment_id, category_id, pan_file)
        self.segment_id, self.category_id, self.pan_file = segment_id, category_id, pan_file


def _dataset_dict(ann, images, image_root, panoptic_root, label_space) -> Dict:
    """One annotation -> one dataset dict (see :func:`load_panoptic_json`)."""
    image_id = ann["image_id"]
    pan_file = os.path.join(panoptic_root, ann["file_name"])
    img = images.get(image_id)
    if img is not None:
        image_file = os.path.join(image_root, img["file_name"])
        height, width = img.get("height"), img.get("width")
    else:
        image_file = os.path.join(image_root, os.path.splitext(ann["file_name"])[0] + ".jpg")
        height = width = None
    segments = []
    for s in ann["segments_info"]:
        try:
            k = label_space.to_contiguous(s["category_id"])
        except KeyError:
            raise _UnknownCategory(s.get("id"), s["category_id"], pan_file) from None
        seg = {
            "id": int(s["id"]),
            "category_id": k,
            "iscrowd": int(s.get("iscrowd", 0)),
            "isthing": label_space.is_thing[k],
        }
        for key in ("area", "bbox"):
            if key in s:
                seg[key] = s[key]
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


def panoptic_metadata(
    categories: Sequence[Dict], image_root: str, panoptic_root: str, panoptic_json: str
) -> Dict:
    """The MetadataCatalog fields of a jsis_d2 panoptic dataset (see LabelSpace.metadata)."""
    md = LabelSpace(categories).metadata()
    md.update(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        ignore_label=IGNORE_LABEL,
        label_divisor=LABEL_DIVISOR,
        evaluator_type=EVALUATOR_TYPE,
    )
    return md


def register_panoptic_dataset(
    name: str,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    categories: Optional[Sequence[Dict]] = None,
    missing_hint: str = "",
) -> None:
    """Register a COCO-panoptic-format dataset with Detectron2 (loading stays lazy).

    Args:
        name: dataset name for ``DATASETS.TRAIN/TEST``.
        image_root: folder of the images.
        panoptic_root: folder of the panoptic PNGs.
        panoptic_json: COCO panoptic JSON.
        categories: dataset categories (dicts with ``id``, ``name``, ``isthing``, optional
            ``color``). None: read them from ``panoptic_json`` now (the file must exist).
        missing_hint: appended to the error raised when the files are missing at load time.

    Registering a name again replaces its previous registration (same arguments: no change).
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
        check_categories(categories)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    label_space = LabelSpace(categories)
    md = panoptic_metadata(categories, image_root, panoptic_root, panoptic_json)
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
    MetadataCatalog.get(name).set(**md)
