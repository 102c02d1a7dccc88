"""JSISPredictor: a trained JSIS-Net on one image (numpy BGR/RGB) -> outputs at its resolution.

Like Detectron2's DefaultPredictor, but with the project's test-time transform (the paper's
fixed-size resize, :func:`jsis_d2.data.augmentations.build_augmentations`) instead of
ResizeShortestEdge.
"""
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling import build_model

__all__ = ["JSISPredictor"]


class JSISPredictor:
    """``predictor(image)`` with ``image`` uint8 [H, W, 3] in ``cfg.INPUT.FORMAT`` returns the
    model's output dict for that image (keys per branch: ``sem_seg`` [K, H, W],
    ``instances``, ``panoptic_seg``, ``proposals``), at the image's own H x W."""

    def __init__(self, cfg):
        from .data.augmentations import build_augmentations

        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
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
