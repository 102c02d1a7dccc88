"""The whole panoptic model as one traceable module (:class:`PanopticGraph`): network, resize of
the semantic logits to the original size, per-box mask paste and the JSIS merge core.

Graph contract (what :mod:`jsis_d2.export.exporter` writes and ``jsis_runtime`` reads):

* inputs: ``image`` uint8 [H_in, W_in, 3] (HWC; the image already resized to
  INPUT.JSIS.FIXED_SIZE with PIL bilinear, channels in INPUT.FORMAT order; normalization is in
  the graph) and ``orig_size`` int64 [2] = (H, W) of the original image;
* outputs: ``panoptic_seg`` int32 [H, W] (0 = void, else a segment id), ``segments`` int64
  [S, 4] rows (id, contiguous category k, isthing 0/1, area in pixels) in id order,
  ``segment_scores`` float32 [S] (instance score; 1.0 for stuff). Same ids and order as
  :meth:`JSISNet.inference`'s ``panoptic_seg``.

Shape legend: K classes (things first), N detections, n kept instances, M the ROI mask size.
"""

import copy
import importlib
import logging
import os
import sys
import types
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.ppm_head import MatrixAdaptiveAvgPool2d
from ..postprocessing import jsis_merge_core, merge_order

__all__ = ["PanopticGraph", "paste_masks_separable", "tracing_adapter_class"]

logger = logging.getLogger(__name__)


def tracing_adapter_class():
    """Detectron2's ``TracingAdapter`` (``detectron2/export/flatten.py``).

    Detectron2 workaround (the only one of this package): detectron2 0.6 (the pb1 sdist)
    fails on ``from detectron2.export import TracingAdapter`` because ``export/__init__.py``
    imports caffe2 (through ``export/api.py``); ``flatten.py`` and its one dependency
    ``torchscript_patch.py`` do not need it. There, the two modules are imported under a bare
    ``detectron2.export`` package object that skips that ``__init__``. The official stack
    imports normally. Re-check when detectron2 is upgraded: if ``from detectron2.export import
    TracingAdapter`` works on every supported stack, drop the fallback.
    """
    try:
        from detectron2.export import TracingAdapter

        return TracingAdapter
    except ImportError as e:
        if "caffe2" not in str(e):
            raise
    import detectron2

    name = "detectron2.export"
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(os.path.dirname(detectron2.__file__), "export")]
    previous = sys.modules.get(name)
    sys.modules[name] = package
    try:
        return importlib.import_module(name + ".flatten").TracingAdapter
    finally:  # the bare package object is only needed while flatten.py imports
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


def _bilinear_weights(coord: torch.Tensor, size: int) -> torch.Tensor:
    """[n, P] sample positions (pixel units of a ``size``-long axis, ``align_corners=False``)
    -> [n, P, size] bilinear weights, zero outside [0, size) as grid_sample's zero padding."""
    taps = torch.arange(size, dtype=coord.dtype, device=coord.device)
    return (1 - (coord[..., None] - taps).abs()).clamp(min=0)


def paste_masks_separable(masks: torch.Tensor, boxes: torch.Tensor, height, width):
    """Paste ROI masks into the image as two matrix products per mask (traceable).

    The same sampling as Detectron2's ``_do_paste_mask`` (bilinear ``grid_sample``,
    ``align_corners=False``, zero outside the box), written as ``Wy @ mask @ Wx^T`` with
    bilinear weight matrices (bilinear interpolation is separable): O(n M W (M + H)) multiply-
    adds at GEMM speed instead of a per-pixel sampling of n x H x W; equal up to float rounding.

    Args:
        masks: float [n, M, M] probabilities. boxes: float [n, 4] XYXY in the output image.
        height, width: output size (ints, or 0-dim int64 tensors when tracing).
    Returns:
        float [n, height, width].
    """
    m = masks.shape[-1]
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    ys = torch.arange(height, device=masks.device).to(masks.dtype) + 0.5
    xs = torch.arange(width, device=masks.device).to(masks.dtype) + 0.5
    # as _do_paste_mask: normalized to [-1, 1] over the box, then grid_sample's unnormalization
    gy = (ys[None, :] - y0[:, None]) / (y1 - y0)[:, None] * 2 - 1
    gx = (xs[None, :] - x0[:, None]) / (x1 - x0)[:, None] * 2 - 1
    wy = _bilinear_weights(((gy + 1) * m - 1) / 2, m)  # [n, H, M]
    wx = _bilinear_weights(((gx + 1) * m - 1) / 2, m)  # [n, W, M]
    return torch.matmul(wy, torch.matmul(masks, wx.transpose(1, 2)))


def _fix_ppm_pooling(model: nn.Module, feature_size: Tuple[int, int]) -> int:
    """Replace the PPM head's adaptive average pooling by fixed matrix products for the
    feature map size ``feature_size`` (the ONNX exporter cannot export adaptive pooling of a
    size it sees as symbolic). Returns how many poolings were replaced."""
    count = 0
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, name, MatrixAdaptiveAvgPool2d(child.output_size, feature_size))
                count += 1
    return count


class PanopticGraph(nn.Module):
    """``(image uint8 [H_in, W_in, 3], orig_size int64 [2]) -> (panoptic_seg int32 [H, W],
    segments int64 [S, 4], segment_scores float32 [S])`` (the module docstring's contract) for
    a JSISNet with both branches and the "jsis" merge, in float32 on the model's device.

    Works on a deep copy of ``model`` whose PPM poolings are fixed to the feature size of the
    ``input_size`` images; the eager path is the model's own code (``do_postprocess=False``),
    then the same steps as :meth:`JSISNet.inference` in tensors only.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int]):
        super().__init__()
        if not (model.semantic_on and model.instance_on and model.panoptic_on):
            raise ValueError(
                "export needs both branches and the panoptic merge (MODEL.JSIS.BRANCHES = "
                '["semantic", "instance"], MODEL.JSIS.PANOPTIC_ON True)'
            )
        if model.merge_name != "jsis":
            raise ValueError(
                f"export supports MODEL.JSIS.MERGE 'jsis' only, got {model.merge_name!r}"
            )
        if not model.mask_threshold > 0:
            raise ValueError(
                f"export needs MODEL.JSIS.MASK_THRESHOLD > 0, got {model.mask_threshold} (the "
                "merge core's all-zero 'no instance' row must stay below it)"
            )
        if model.test_dtype != torch.float32:
            raise ValueError("export runs in float32: set TEST.PRECISION to float32")
        self.model = copy.deepcopy(model).eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        h, w = self.input_size
        head = self.model.sem_seg_head
        feature = {}

        def record(mod, args):
            feature["size"] = tuple(args[0][mod.in_feature].shape[-2:])

        hook = head.register_forward_pre_hook(record)
        with torch.no_grad():
            (out,) = self.model.inference(
                [{"image": torch.zeros(3, h, w, dtype=torch.uint8, device=self.model.device)}],
                do_postprocess=False,
            )
        hook.remove()
        self.mask_size = int(out["instances"].pred_masks.shape[-1])  # M
        _fix_ppm_pooling(head, feature["size"])
        self.stuff_classes = [k for k in range(model.num_classes) if k >= model.num_things]
        self.num_things = model.num_things

    def forward(self, image: torch.Tensor, orig_size: torch.Tensor):
        model = self.model
        h_in, w_in = self.input_size
        x = image.permute(2, 0, 1)  # [3, H_in, W_in] uint8, INPUT.FORMAT channel order
        (raw,) = model.inference([{"image": x}], do_postprocess=False)
        height, width = orig_size[0], orig_size[1]

        # semantic logits at the original size (as sem_seg_postprocess)
        sem = raw["sem_seg"][:, :h_in, :w_in]
        sem = F.interpolate(sem[None], size=(height, width), mode="bilinear", align_corners=False)
        sem = sem[0]

        # boxes at the original size, clipped; empty ones dropped (as detector_postprocess)
        inst = raw["instances"]
        boxes = inst.pred_boxes.tensor
        scale = torch.stack([width / w_in, height / h_in, width / w_in, height / h_in]).float()
        boxes = boxes * scale
        limit = torch.stack([width, height, width, height]).to(boxes.dtype)
        boxes = torch.min(boxes.clamp(min=0), limit)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores = inst.scores.masked_fill(~nonempty, float("-inf"))
        order = merge_order(scores, model.instance_score_thresh)  # rule 1 + merge order

        # paste the kept instances' masks, plus one all-zero "no instance" row (see the core)
        roi = inst.pred_masks[:, 0].index_select(0, order)  # [n, M, M]
        roi = torch.cat([roi, roi.new_zeros((1, self.mask_size, self.mask_size))])
        roi_boxes = torch.cat([boxes.index_select(0, order), boxes.new_tensor([[0, 0, 1, 1]])])
        probs = paste_masks_separable(roi, roi_boxes, height, width)

        pan, segments, seg_scores, _ = jsis_merge_core(
            sem,
            probs,
            inst.scores.index_select(0, order),
            inst.pred_classes.index_select(0, order),
            self.stuff_classes,
            stuff_area_thresh=model.stuff_area_thresh,
            mask_threshold=model.mask_threshold,
        )
        return pan, segments, seg_scores
