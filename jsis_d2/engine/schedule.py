"""Epoch-based schedules (the paper's "8 epochs, LR halved after epochs 4 and 7") converted to
Detectron2's iteration-based SOLVER.MAX_ITER / SOLVER.STEPS."""

import logging
import math

from ..data.build import train_dataset_dicts
from .checks import UsageError

__all__ = ["resolve_epoch_schedule"]

logger = logging.getLogger(__name__)


def resolve_epoch_schedule(cfg, num_images=None):
    """When ``SOLVER.EPOCHS > 0``, set ``SOLVER.MAX_ITER`` and ``SOLVER.STEPS`` from the number
    of training images (summed over DATASETS.TRAIN, as the training loader loads them) and
    ``SOLVER.IMS_PER_BATCH`` (in place; ``cfg`` must not be frozen).
    One epoch = ceil(num_images / IMS_PER_BATCH) iterations.

    Returns the number of iterations per epoch (0 when the config is iteration-based).
    """
    epochs = cfg.SOLVER.EPOCHS
    if epochs <= 0:
        return 0
    steps_epochs = list(cfg.SOLVER.STEPS_EPOCHS)
    bad = [e for e in steps_epochs if not 0 < e < epochs]
    if bad or steps_epochs != sorted(steps_epochs):
        raise UsageError(
            f"SOLVER.STEPS_EPOCHS={steps_epochs} must be increasing and inside (0, "
            f"SOLVER.EPOCHS={epochs})"
        )
    if num_images is None:
        num_images = len(train_dataset_dicts(cfg))  # what the training loader will use
    if num_images <= 0:
        raise UsageError(f"DATASETS.TRAIN={list(cfg.DATASETS.TRAIN)} holds no image")
    per_epoch = math.ceil(num_images / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.MAX_ITER = int(epochs * per_epoch)
    cfg.SOLVER.STEPS = tuple(int(round(e * per_epoch)) for e in steps_epochs)
    logger.info(
        "Epoch schedule: %d images, batch %d -> %d iterations/epoch; %s epochs = MAX_ITER %d, "
        "LR steps after epochs %s = iterations %s",
        num_images,
        cfg.SOLVER.IMS_PER_BATCH,
        per_epoch,
        epochs,
        cfg.SOLVER.MAX_ITER,
        steps_epochs,
        list(cfg.SOLVER.STEPS),
    )
    return per_epoch
