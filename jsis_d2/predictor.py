"""JSISPredictor: a trained JSIS-Net on one image (numpy BGR/RGB) -> outputs at its resolution.

Like Detectron2's DefaultPredictor, but with the project's test-time transform (the paper's
fixed-size resize, :func:`jsis_d2.data.augmentations.build_augmentations`) instead of
ResizeShortestEdge, and it refuses to run on random weights: MODEL.WEIGHTS must be set
(unless ``allow_random_init=True``) and fit the model (same K / T, every tensor present).
"""
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling import build_model

__all__ = ["JSISPredictor"]


class JSISPredictor:
    """``predictor(image)`` with ``image`` uint8 [H, W, 3] in ``cfg.INPUT.FORMAT`` returns the
    model's output dict for that image (keys per branch: ``sem_seg`` [K, H, W],
    ``instances``, ``panoptic_seg``, ``proposals``), at the image's own H x W.

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
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if weights:
            check_checkpoint_matches_model(self.model, weights, require_all=True)
            DetectionCheckpointer(self.model).load(weights)
        self.augs = T.AugmentationList(build_augmentations(cfg, is_train=False))
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, image):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {tuple(image.shape)}")
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        self.augs(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        return self.model([{"image": tensor, "height": height, "width": width}])[0]
