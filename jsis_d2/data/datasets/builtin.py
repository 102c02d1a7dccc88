"""Built-in datasets, registered at import (lazily: nothing is read until DatasetCatalog.get),
under ``$DETECTRON2_DATASETS`` (default ``./datasets``) as in Detectron2; never d2's names:

- ``jsis_coco_2017_{train,val}_panoptic``: ``coco/{train,val}2017/*.jpg``,
  ``coco/panoptic_{train,val}2017/*.png``, ``coco/annotations/panoptic_{train,val}2017.json``
- ``jsis_mapillary_vistas_{train,val}_panoptic`` (v1.2): in
  ``mapillary_vistas/{training,validation}/``: ``images/*.jpg``, ``panoptic/*.png``,
  ``panoptic/panoptic_2018.json``
- ``jsis_cityscapes_fine_panoptic_{train,val}`` (cityscapesscripts' ``createPanopticImgs``
  output, label ids): in ``cityscapes/``: ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png``,
  ``gtFine/cityscapes_panoptic_{train,val}/*_gtFine_panoptic.png``,
  ``gtFine/cityscapes_panoptic_{train,val}.json`` (string image ids, images in city folders)
- ``jsis_synthetic_{train,val}`` (``tools/make_synthetic_dataset.py``): in
  ``jsis_synthetic/{train,val}/``: ``images/*.png``, ``panoptic/*.png``,
  ``panoptic_{train,val}.json``
"""

import json
import os
from typing import Dict, List, Optional, Sequence, Union

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ..synthetic import SYNTHETIC_CATEGORIES, generate_synthetic_dataset, synthetic_split_paths
from .panoptic import register_panoptic_dataset

__all__ = [
    "register_all",
    "mapillary_vistas_categories",
    "cityscapes_categories",
    "datasets_root",
    "SYNTHETIC_DATASET_NAMES",
    "default_synthetic_root",
    "register_synthetic_datasets",
    "make_synthetic_datasets",
]

COCO_HINT = (
    "Get COCO panoptic 2017 from https://cocodataset.org/#download (train2017.zip, "
    "val2017.zip, panoptic_annotations_trainval2017.zip; unzip the panoptic_*2017.zip inside "
    "annotations/ into coco/) and set DETECTRON2_DATASETS to the folder holding coco/."
)
MAPILLARY_HINT = (
    "Get Mapillary Vistas v1.2 from https://www.mapillary.com/dataset/vistas (research "
    "edition) into mapillary_vistas/{training,validation}/{images,panoptic} and set "
    "DETECTRON2_DATASETS to the folder holding mapillary_vistas/."
)
CITYSCAPES_HINT = (
    "Get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ into cityscapes/, then write the panoptic "
    "ground truth with cityscapesscripts' createPanopticImgs (pip install cityscapesscripts; "
    "CITYSCAPES_DATASET=$DETECTRON2_DATASETS/cityscapes csCreatePanopticImgs) and set "
    "DETECTRON2_DATASETS to the folder holding cityscapes/ (docs/CITYSCAPES.md)."
)
SYNTHETIC_HINT = (
    "Generate the synthetic dataset with `python tools/make_synthetic_dataset.py` "
    "(writes $DETECTRON2_DATASETS/jsis_synthetic, default ./datasets/jsis_synthetic)."
)
SYNTHETIC_DATASET_NAMES = {"train": "jsis_synthetic_train", "val": "jsis_synthetic_val"}


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` or ``datasets`` (the one home of the dataset root)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def default_synthetic_root() -> str:
    """``$DETECTRON2_DATASETS/jsis_synthetic`` (default ``./datasets/jsis_synthetic``)."""
    return os.path.join(datasets_root(), "jsis_synthetic")


def _package_categories(file_name: str) -> List[Dict]:
    with open(os.path.join(os.path.dirname(__file__), file_name)) as f:
        return json.load(f)


def mapillary_vistas_categories() -> List[Dict]:
    """The 65 Mapillary Vistas v1.2 panoptic categories (37 things, 28 stuff), package data."""
    return _package_categories("mapillary_vistas_v1.2_categories.json")


def cityscapes_categories() -> List[Dict]:
    """The 19 evaluated Cityscapes categories (8 things, 11 stuff) as cityscapesscripts'
    ``createPanopticImgs`` writes them (``id`` = label id in 7..33, ``name``, ``color``,
    ``supercategory``, ``isthing``), package data."""
    return _package_categories("cityscapes_panoptic_categories.json")


def register_all(root: Optional[str] = None) -> None:
    """Register every built-in dataset under ``root`` (default :func:`datasets_root`).

    Idempotent; calling it again (e.g. after changing ``DETECTRON2_DATASETS``) re-registers
    the names with the new paths.
    """
    root = root or datasets_root()
    coco_categories = [
        {k: c[k] for k in ("id", "name", "isthing", "color")} for c in COCO_CATEGORIES
    ]
    mapillary = mapillary_vistas_categories()
    cityscapes = cityscapes_categories()
    coco = os.path.join(root, "coco")
    for split, mapillary_split in (("train", "training"), ("val", "validation")):
        register_panoptic_dataset(
            f"jsis_coco_2017_{split}_panoptic",
            os.path.join(coco, f"{split}2017"),
            os.path.join(coco, f"panoptic_{split}2017"),
            os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
            coco_categories,
            missing_hint=COCO_HINT,
        )
        d = os.path.join(root, "mapillary_vistas", mapillary_split)
        register_panoptic_dataset(
            f"jsis_mapillary_vistas_{split}_panoptic",
            os.path.join(d, "images"),
            os.path.join(d, "panoptic"),
            os.path.join(d, "panoptic", "panoptic_2018.json"),
            mapillary,
            missing_hint=MAPILLARY_HINT,
        )
        gt = os.path.join(root, "cityscapes", "gtFine")
        register_panoptic_dataset(
            f"jsis_cityscapes_fine_panoptic_{split}",
            os.path.join(root, "cityscapes", "leftImg8bit", split),  # one folder per city
            os.path.join(gt, f"cityscapes_panoptic_{split}"),
            os.path.join(gt, f"cityscapes_panoptic_{split}.json"),
            cityscapes,
            missing_hint=CITYSCAPES_HINT,
        )
    register_synthetic_datasets(os.path.join(root, "jsis_synthetic"))


def register_synthetic_datasets(
    root: Optional[str] = None, names: Optional[Dict[str, str]] = None
) -> None:
    """Register ``jsis_synthetic_{train,val}`` (or ``names``: split -> dataset name) at ``root``
    (default :func:`default_synthetic_root`). Lazy: the files may not exist yet."""
    root = root or default_synthetic_root()
    for split, name in (names or SYNTHETIC_DATASET_NAMES).items():
        paths = synthetic_split_paths(root, split)  # image_root, panoptic_root, panoptic_json
        register_panoptic_dataset(
            name, categories=SYNTHETIC_CATEGORIES, missing_hint=SYNTHETIC_HINT, **paths
        )


def make_synthetic_datasets(
    root: Optional[str] = None,
    num_train: int = 400,
    num_val: int = 50,
    image_size: Union[int, Sequence[int]] = 128,
    seed: int = 0,
    image_format: str = "png",
    overwrite: bool = False,
    register: bool = True,
) -> Dict[str, Dict[str, str]]:
    """Generate the train and val splits (:func:`~jsis_d2.data.synthetic.
    generate_synthetic_dataset`) and register them as ``jsis_synthetic_{train,val}``.
    Returns {"train": paths, "val": paths}."""
    root = root or default_synthetic_root()
    out = {
        split: generate_synthetic_dataset(root, split, n, image_size, seed, image_format, overwrite)
        for split, n in (("train", num_train), ("val", num_val))
    }
    if register:
        register_synthetic_datasets(root)
    return out


register_all()
