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
    """For tests that call a tool's main(), which sets up the jsis_d2/detectron2 loggers on
    the captured stdout: the test starts with none of those loggers' handlers (an earlier
    test may have left one on a closed stream), and afterwards the handlers it added are
    removed and the earlier ones and ``propagate`` restored."""
    import logging

    from jsis_d2.engine.launcher import RUN_LOGGERS, separate_run_logs

    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in RUN_LOGGERS
    }
    for name in RUN_LOGGERS:
        logging.getLogger(name).handlers = []
    with separate_run_logs():
        yield
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers = handlers
        logging.getLogger(name).propagate = propagate


@pytest.fixture
def capture_log():
    """``capture_log(name)`` -> a list that receives the messages of logger ``name`` from then
    until the end of the test (direct handler: the jsis_d2 logger may not propagate)."""
    import logging

    attached = []

    def capture(name):
        lines = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())
        logging.getLogger(name).addHandler(handler)
        attached.append((name, handler))
        return lines

    yield capture
    for name, handler in attached:
        logging.getLogger(name).removeHandler(handler)
