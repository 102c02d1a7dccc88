"""Shared test fixtures. Everything runs on CPU with tiny inputs."""
import os

import pytest
import torch

import jsis_d2  # noqa: F401  (compat shims + registrations before detectron2 is used)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
COCO_SAMPLE = os.path.join(SHARED_DATA, "coco_panoptic_sample")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def coco_sample_dir():
    """The two real COCO val2017 images + official panoptic GT in ../shared (skip if absent)."""
    if not os.path.isdir(COCO_SAMPLE):
        pytest.skip(f"real COCO sample not present at {COCO_SAMPLE} (it lives in ../shared)")
    return COCO_SAMPLE


@pytest.fixture
def mapillary_categories_file():
    path = os.path.join(SHARED_DATA, "mapillary_vistas_v1.2_categories.json")
    if not os.path.isfile(path):
        pytest.skip(f"Mapillary category table not present at {path}")
    return path
