"""Pictures of JSIS-Net outputs with Detectron2's Visualizer.

The four-panel layout is the paper's Figure 1: top left the image, top right the panoptic
segmentation, bottom left the semantic segmentation, bottom right the instance segmentation,
each with category names. Category ids in the outputs are contiguous indices (see
:mod:`jsis_d2.data.label_space`), which index ``metadata.thing_classes`` (things) and
``metadata.stuff_classes`` (all K classes) directly.
"""

import numpy as np

from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_panoptic", "draw_semantic", "draw_instances", "draw_four_panel"]


def _vis(image_rgb, metadata, scale):
    return Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)


def draw_panoptic(image_rgb, outputs, metadata, scale=1.0):
    """``outputs["panoptic_seg"]`` = (int [H, W] ids, segments_info) -> RGB uint8 [H', W', 3]."""
    ids, segments_info = outputs["panoptic_seg"]
    v = _vis(image_rgb, metadata, scale)
    return v.draw_panoptic_seg(ids.to("cpu"), segments_info, alpha=0.6).get_image()


def draw_semantic(image_rgb, outputs, metadata, scale=1.0):
    """Argmax of ``outputs["sem_seg"]`` (float [K, H, W]) over all K classes."""
    labels = outputs["sem_seg"].argmax(dim=0).to("cpu")
    v = _vis(image_rgb, metadata, scale)
    return v.draw_sem_seg(labels, alpha=0.6).get_image()


def draw_instances(image_rgb, outputs, metadata, score_thresh=0.5, scale=1.0):
    """``outputs["instances"]`` with ``scores >= score_thresh`` (boxes, masks, names)."""
    inst = outputs["instances"].to("cpu")
    inst = inst[inst.scores >= score_thresh]
    v = _vis(image_rgb, metadata, scale)
    return v.draw_instance_predictions(inst).get_image()


def draw_four_panel(image_rgb, outputs, metadata, score_thresh=0.5, scale=1.0):
    """Figure-1 layout as one RGB uint8 image [2 H', 2 W', 3]. A panel whose branch is off
    (key absent from ``outputs``) is drawn as the plain image."""
    image_rgb = np.ascontiguousarray(image_rgb)
    plain = _vis(image_rgb, metadata, scale).get_output().get_image()
    pan = draw_panoptic(image_rgb, outputs, metadata, scale) if "panoptic_seg" in outputs else plain
    sem = draw_semantic(image_rgb, outputs, metadata, scale) if "sem_seg" in outputs else plain
    ins = (
        draw_instances(image_rgb, outputs, metadata, score_thresh, scale)
        if "instances" in outputs
        else plain
    )
    h, w = plain.shape[:2]
    panels = [np.asarray(p)[:h, :w] for p in (plain, pan, sem, ins)]
    return np.vstack([np.hstack(panels[:2]), np.hstack(panels[2:])])
