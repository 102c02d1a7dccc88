"""The training dataset dicts, as Detectron2 loads them, plus what SKIP_BAD_SAMPLES promises.

Most bad samples are found by the mapper (:class:`~jsis_d2.data.dataset_mapper.
BadSampleError`); an unknown category id is found when the JSON loads, so with
``DATALOADER.SKIP_BAD_SAMPLES`` the loader drops those images (logged, counted). Evaluation
never skips: ``DatasetCatalog.get`` keeps refusing such a dataset.
"""

import contextlib
import functools
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, get_detection_dataset_dicts

from .dataset_mapper import BadSampleError
from .datasets.panoptic import DatasetNotFoundError, load_panoptic_json

__all__ = ["DatasetError", "train_dataset_dicts", "checked_dataset_dicts"]


class DatasetError(ValueError):
    """A dataset that cannot be loaded as registered (format error, unknown category id, an
    unreadable image header); the message names the dataset and the file."""


@contextlib.contextmanager
def _dataset_errors(names):
    """Loader errors (ValueError, OSError) -> one :class:`DatasetError` naming the datasets;
    the errors that already name their cause for the user pass through."""
    try:
        yield
    except (DatasetNotFoundError, BadSampleError):
        raise
    except (ValueError, OSError) as e:
        what = ", ".join(map(repr, names))
        detail = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else e
        raise DatasetError(f"dataset {what} cannot be loaded: {detail}") from e


def checked_dataset_dicts(name: str) -> List[Dict]:
    """The dataset dicts of an evaluation dataset, loaded now and their files checked: a
    missing image or panoptic PNG is a :class:`DatasetError` naming the first one and the
    count, before any training (not after it, when the evaluation would reach it)."""
    with _dataset_errors([name]):
        dicts = DatasetCatalog.get(name)
    missing = [
        d[key]
        for d in dicts
        for key in ("file_name", "pan_seg_file_name")
        if key in d and not os.path.isfile(d[key])
    ]
    if missing:
        raise DatasetError(
            f"dataset {name!r}: {len(missing)} file(s) missing, the first: {missing[0]}"
        )
    return dicts


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
    with _dataset_errors(names):
        return _train_dataset_dicts(cfg, names)


def _train_dataset_dicts(cfg, names) -> List[Dict]:
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
