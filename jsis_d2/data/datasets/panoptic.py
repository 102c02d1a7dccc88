"""COCO-panoptic-format datasets: one loader and one registration function for all of them.

A dataset in COCO panoptic format is three things: a folder of images, a folder of panoptic
PNGs (segment id = R + 256 G + 256^2 B, 0 = void) and a JSON with ``images``,
``annotations`` (one per image: ``image_id``, ``file_name`` of the PNG, ``segments_info``) and
``categories``. COCO panoptic, Mapillary Vistas, the synthetic dataset and any custom dataset
all go through :func:`register_panoptic_dataset`.

Dataset dicts (loader output) use CONTIGUOUS category indices (see
:mod:`jsis_d2.data.label_space`); dataset category ids stay in the files.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..label_space import LabelSpace

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


def load_panoptic_json(
    panoptic_json: str,
    image_root: str,
    panoptic_root: str,
    label_space: LabelSpace,
    missing_hint: str = "",
) -> List[Dict]:
    """Load a COCO-panoptic-format dataset as Detectron2 dataset dicts.

    Image files come from the JSON ``images`` entries (``file_name``, ``height``,
    ``width``), so any image extension works; an image without such an entry falls back to
    the PNG's stem + ".jpg" and reads its size from the file header.

    Returns:
        list of dicts: "file_name", "image_id" (as in the JSON), "height", "width" (original),
        "pan_seg_file_name", "segments_info": list of {"id", "category_id" (contiguous),
        "iscrowd", "isthing", plus "area" and "bbox" (XYWH) copied from the JSON when present}.

    Raises:
        DatasetNotFoundError: the JSON or a folder is missing (message: path + ``missing_hint``).
        ValueError: a segment with a category id unknown to ``label_space`` (names the JSON,
            the PNG and the ids), or a JSON without "annotations".
    """
    _require(panoptic_json, "panoptic JSON", missing_hint, isdir=False)
    _require(image_root, "image folder", missing_hint, isdir=True)
    _require(panoptic_root, "panoptic PNG folder", missing_hint, isdir=True)
    with PathManager.open(panoptic_json) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"cannot parse panoptic JSON {panoptic_json}: {e}") from e
    if "annotations" not in data:
        raise ValueError(f"panoptic JSON {panoptic_json} has no 'annotations' list")
    images = {img["id"]: img for img in data.get("images", [])}

    ret = []
    for ann in data["annotations"]:
        image_id = ann["image_id"]
        pan_file = os.path.join(panoptic_root, ann["file_name"])
        img = images.get(image_id)
        if img is not None:
            image_file = os.path.join(image_root, img["file_name"])
            height, width = img.get("height"), img.get("width")
        else:
            image_file = os.path.join(image_root, os.path.splitext(ann["file_name"])[0] + ".jpg")
            height = width = None
        if height is None or width is None:
            with PathManager.open(image_file, "rb") as fi:
                width, height = Image.open(fi).size  # header only
        segments = []
        for s in ann["segments_info"]:
            try:
                k = label_space.to_contiguous(s["category_id"])
            except KeyError:
                raise ValueError(
                    f"{panoptic_json}: segment {s.get('id')} of {pan_file} has unknown category "
                    f"id {s['category_id']} (known ids: {sorted(label_space.dataset_ids)})"
                ) from None
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
        ret.append(
            {
                "file_name": image_file,
                "image_id": image_id,
                "height": int(height),
                "width": int(width),
                "pan_seg_file_name": pan_file,
                "segments_info": segments,
            }
        )
    if not ret:
        raise ValueError(f"panoptic JSON {panoptic_json} has no annotations")
    logger.info(f"Loaded {len(ret)} images in COCO panoptic format from {panoptic_json}")
    return ret


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
    if categories is None:
        _require(panoptic_json, "panoptic JSON (categories=None reads them from it)", "", False)
        with PathManager.open(panoptic_json) as f:
            categories = json.load(f).get("categories")
        if not categories:
            raise ValueError(f"panoptic JSON {panoptic_json} has no 'categories'")
    label_space = LabelSpace(categories)
    md = panoptic_metadata(categories, image_root, panoptic_root, panoptic_json)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name,
        lambda: load_panoptic_json(
            panoptic_json, image_root, panoptic_root, label_space, missing_hint
        ),
    )
    MetadataCatalog.get(name).set(**md)
