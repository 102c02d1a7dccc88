"""The training dataset dicts, as Detectron2 loads them, plus what SKIP_BAD_SAMPLES promises.

Most bad samples are found by the mapper (:class:`~jsis_d2.data.dataset_mapper.
BadSampleError`); an unknown category id is found when the JSON loads, so with
``DATALOADER.SKIP_BAD_SAMPLES`` the loader drops those images (logged, counted). Evaluation
never skips: ``DatasetCatalog.get`` keeps refusing such a dataset.
"""

import functools
from typing import Dict, List

from detectron2.data import DatasetCatalog, get_detection_dataset_dicts

from .datasets.panoptic import load_panoptic_json

__all__ = ["train_dataset_dicts"]


def _load_skipping_bad_images(name: str) -> List[Dict]:
    loader = DatasetCatalog[name] if name in DatasetCatalog.list() else None
    if isinstance(loader, functools.partial) and loader.func is load_panoptic_json:
        return loader(skip_unknown_categories=True)
    return DatasetCatalog.get(name)  # not a jsis_d2 panoptic dataset: as registered


def train_dataset_dicts(cfg) -> List[Dict]:
    """The dataset dicts of ``cfg.DATASETS.TRAIN`` (all of them, concatenated).

    Without ``DATALOADER.SKIP_BAD_SAMPLES``: exactly Detectron2's training loader's
    ``get_detection_dataset_dicts``. With it: images with unknown category ids are dropped
    (see the module docstring); :class:`BadSampleError` when no image is left.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not cfg.DATALOADER.SKIP_BAD_SAMPLES:
        return get_detection_dataset_dicts(
            names,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    return [d for name in names for d in _load_skipping_bad_images(name)]
