"""JSISPredictor: Detectron2's ``DefaultPredictor`` with the project's test-time transform (the
paper's fixed-size resize, aspect ratio not kept) instead of ResizeShortestEdge, refusing to
run on random weights or weights that do not fit the model."""

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor

__all__ = ["JSISPredictor"]


class JSISPredictor(DefaultPredictor):
    """``predictor(image)`` with ``image`` uint8 [H, W, 3] in BGR order (as DefaultPredictor:
    flipped to RGB when ``cfg.INPUT.FORMAT`` is "RGB") returns the model's output dict for
    that image (keys per branch: ``sem_seg`` [K, H, W], ``instances``, ``panoptic_seg``,
    ``proposals``), at the image's own H x W.

    Raises :class:`jsis_d2.engine.UsageError` (one line naming the file or key) when
    MODEL.WEIGHTS is empty and ``allow_random_init`` is False, or names a checkpoint that is
    missing, torn, made for another number of classes or lacking some of the model's tensors.
    """

    def __init__(self, cfg, allow_random_init=False):
        from .data.augmentations import build_augmentations
        from .engine.checks import UsageError, check_checkpoint_matches_model

        weights = cfg.MODEL.WEIGHTS
        if not weights and not allow_random_init:
            raise UsageError(
                "MODEL.WEIGHTS is empty: the model would run on random weights. Give a trained "
                "checkpoint (MODEL.WEIGHTS path/model_final.pth)"
            )
        # DefaultPredictor builds the model and loads nothing (WEIGHTS ""); the checkpoint is
        # checked against the built model before it is loaded.
        no_weights = cfg.clone()
        no_weights.defrost()
        no_weights.MODEL.WEIGHTS = ""
        super().__init__(no_weights)
        self.cfg = cfg.clone()
        if weights:
            check_checkpoint_matches_model(self.model, weights, require_all=True)
            DetectionCheckpointer(self.model).load(weights)
        (self.aug,) = build_augmentations(cfg, is_train=False)  # one resize at test time

    def __call__(self, original_image):
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {tuple(original_image.shape)}")
        return super().__call__(original_image)
