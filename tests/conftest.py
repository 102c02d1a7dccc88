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


@pytest.fixture
def isolated_logs():
    """For tests that call a tool's main() (it sets up jsis_d2/detectron2 loggers on the
    captured stdout): remove those handlers afterwards and restore ``propagate``, so later
    tests neither write to a closed stream nor miss records in caplog."""
    import logging

    from jsis_d2.engine.launcher import RUN_LOGGERS, separate_run_logs

    propagate = {n: logging.getLogger(n).propagate for n in RUN_LOGGERS}
    with separate_run_logs():
        yield
    for name, value in propagate.items():
        logging.getLogger(name).propagate = value
