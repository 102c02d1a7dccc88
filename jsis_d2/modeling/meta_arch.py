"""JSISNet: one ResNet C4 backbone shared by an instance branch (Detectron2's RPN + Res5ROIHeads
with a mask head) and a semantic branch (:class:`~jsis_d2.modeling.ppm_head.PPMHead`), plus the
panoptic merge of :mod:`jsis_d2.postprocessing` (paper sections 2.1 and 2.2).

Id spaces: every class index in and out of the model is CONTIGUOUS: ``k`` in ``[0, K)``, things
first, so a ROI-head class in ``[0, T)`` is that thing's index (is_thing = ``k < T``, K =
``MODEL.SEM_SEG_HEAD.NUM_CLASSES``, T = ``MODEL.ROI_HEADS.NUM_CLASSES``); the model never reads
the ``MetadataCatalog``. Shapes: input images [3, H', W'] (INPUT.JSIS.FIXED_SIZE); outputs at
the ORIGINAL size (H, W) = (input["height"], input["width"]).

Memory at inference: the merge works at the original size on float mask probabilities of the
instances with score >= MODEL.JSIS.INSTANCE_SCORE_THRESH (4 bytes x N' x H x W; e.g. 30
instances on a 12-Mpixel Mapillary image: ~1.4 GB), besides Detectron2's usual bool masks; each
mask is pasted once (:func:`paste_masks_once`).
"""

from typing import Dict, List, Optional

import torch
from torch import nn
from torch.profiler import record_function

from detectron2.config import configurable
from detectron2.layers.mask_ops import _do_paste_mask
from detectron2.modeling import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    build_sem_seg_head,
)
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import ImageList, Instances

from ..precision import PrecisionPolicy, inference_dtype, training_dtype
from .merges import get_merge
from .roi_align import use_separable_roi_align

__all__ = ["JSISNet", "LOSS_KEY_TO_WEIGHT", "paste_mask_probs", "paste_masks_once"]

BRANCHES = ("semantic", "instance")
# Detectron2 loss key -> MODEL.JSIS.LOSS_WEIGHTS key (paper Table 2, lambda_1..lambda_6).
LOSS_KEY_TO_WEIGHT = {
    "loss_rpn_cls": "RPN_OBJ",
    "loss_rpn_loc": "RPN_REG",
    "loss_cls": "DET_CLS",
    "loss_box_reg": "DET_REG",
    "loss_mask": "MASK",
    "loss_sem_seg": "SEG",
}
# Detectron2's own loss-weight keys: JSIS-Net weights the losses with MODEL.JSIS.LOSS_WEIGHTS
# only, so these must stay 1.0 (otherwise a loss would silently be weighted twice).
_D2_WEIGHT_KEYS = (
    "RPN.LOSS_WEIGHT",
    "RPN.BBOX_REG_LOSS_WEIGHT",
    "ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT",
    "SEM_SEG_HEAD.LOSS_WEIGHT",
)


def paste_mask_probs(mask_probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int):
    """Paste per-ROI mask probabilities into the image, keeping them as floats.

    Args:
        mask_probs: float [N, M, M] probabilities in [0, 1] (ROI mask head output).
        boxes: float [N, 4] XYXY boxes in the (height, width) image.
    Returns:
        float [N, height, width] probabilities (0 outside each box).
    """
    keep = torch.arange(mask_probs.shape[0], device=mask_probs.device)
    return paste_masks_once(mask_probs, boxes, height, width, None, keep)[1]


def paste_masks_once(
    mask_probs: torch.Tensor,
    boxes: torch.Tensor,
    height: int,
    width: int,
    threshold: Optional[float],
    keep: torch.Tensor,
):
    """Paste each ROI mask once: its thresholded bool mask and, for the rows ``keep``, its
    probabilities (as Detectron2's ``paste_masks_in_image``, which only gives the former).

    Args:
        mask_probs: float [N, M, M] probabilities. boxes: float [N, 4] XYXY in the image.
        threshold: bool masks = probability >= threshold (None: no bool masks).
        keep: int64 [N'] rows whose probabilities are returned, in that order.
    Returns:
        (bool [N, height, width] or None, float [N', height, width]; 0 outside each box).
    """
    n, device = mask_probs.shape[0], mask_probs.device
    masks = None
    if threshold is not None:
        masks = torch.zeros((n, height, width), dtype=torch.bool, device=device)
    probs = torch.zeros((keep.numel(), height, width), dtype=torch.float32, device=device)
    slot = torch.full((n,), -1, dtype=torch.long)
    slot[keep.cpu()] = torch.arange(keep.numel())
    slot = slot.tolist()
    # As Detectron2's paste_masks_in_image: on CPU one by one over the box region only; on GPU
    # in chunks of at most ~1 GB of output.
    if device.type == "cpu":
        for i in range(n):
            m, (ys, xs) = _do_paste_mask(
                mask_probs[i : i + 1, None].float(), boxes[i : i + 1], height, width, True
            )
            if masks is not None:
                masks[i, ys, xs] = m[0] >= threshold
            if slot[i] >= 0:
                probs[slot[i], ys, xs] = m[0]
        return masks, probs
    per_chunk = max(1, int(2**30 // max(1, 4 * height * width)))
    for a in range(0, n, per_chunk):
        chunk = slice(a, a + per_chunk)
        p = _do_paste_mask(mask_probs[chunk, None].float(), boxes[chunk], height, width, False)[0]
        if masks is not None:
            masks[chunk] = p >= threshold
        for j, s in enumerate(slot[chunk]):
            if s >= 0:
                probs[s] = p[j]
    return masks, probs


@META_ARCH_REGISTRY.register()
class JSISNet(GeneralizedRCNN):
    """JSIS-Net: joint semantic and instance segmentation on one shared C4 backbone.

    Branches (``MODEL.JSIS.BRANCHES``, paper Table 3): "semantic" (PPM head), "instance" (RPN +
    Res5ROIHeads with masks) or both. Training returns the weighted losses
    ``{loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg, loss_mask, loss_sem_seg}`` (only the
    enabled branches' keys), each multiplied by its lambda. Inference: see :meth:`inference`.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        proposal_generator: Optional[nn.Module],
        roi_heads: Optional[nn.Module],
        sem_seg_head: Optional[nn.Module],
        loss_weights: Dict[str, float],
        num_classes: int,
        num_things: int,
        merge: str = "jsis",
        panoptic_on: bool = True,
        stuff_area_thresh: int = 4096,
        instance_score_thresh: float = 0.5,
        mask_threshold: float = 0.5,
        kirillov_overlap_thresh: float = 0.5,
        train_dtype: torch.dtype = torch.float32,
        test_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        separable_roi_align: bool = True,
        **kwargs,
    ):
        """
        Args:
            backbone, pixel_mean, pixel_std, input_format, vis_period: as GeneralizedRCNN.
            proposal_generator, roi_heads: the instance branch (both None: branch off).
            sem_seg_head: the semantic branch (None: off), returning (logits, losses) with an
                unweighted "loss_sem_seg".
            loss_weights: {Detectron2 loss key: lambda}, see LOSS_KEY_TO_WEIGHT.
            num_classes: K (semantic classes, things first). num_things: T (ROI-head classes).
            merge (a name in :data:`~jsis_d2.modeling.merges.PANOPTIC_MERGE_REGISTRY`: "jsis",
                "kirillov"), panoptic_on (needs both branches), stuff_area_thresh,
                instance_score_thresh, mask_threshold (also binarizes the returned instance
                masks), kirillov_overlap_thresh: MODEL.JSIS.*.
            train_dtype, test_dtype: autocast dtypes (float32: none); losses and outputs stay
                float32. channels_last: weights and input images in channels_last format. All
                three held by ``self.precision`` (:class:`~jsis_d2.precision.PrecisionPolicy`).
            separable_roi_align: on the CPU, pool low-precision features and features that need
                a gradient as two GEMMs (:mod:`jsis_d2.modeling.roi_align`); float32 inference
                and CUDA keep Detectron2's ROIAlign (with float32 ROIs for bf16/fp16
                features). MODEL.JSIS.SEPARABLE_ROI_ALIGN.
        """
        super().__init__(
            backbone=backbone,
            proposal_generator=proposal_generator,
            roi_heads=roi_heads,
            **kwargs,
        )
        self.sem_seg_head = sem_seg_head
        self.semantic_on = sem_seg_head is not None
        self.instance_on = roi_heads is not None
        if not (self.semantic_on or self.instance_on):
            raise ValueError("JSISNet needs at least one branch (MODEL.JSIS.BRANCHES is empty)")
        if self.instance_on and proposal_generator is None:
            raise ValueError("JSISNet: the instance branch needs a proposal generator (RPN)")
        self._merge_fn = get_merge(merge)  # ValueError naming MODEL.JSIS.MERGE if unknown
        if not 0 <= num_things <= num_classes:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES (T={num_things}) must be <= "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES (K={num_classes}): things are the first T of "
                f"the K classes"
            )
        unknown = set(loss_weights) - set(LOSS_KEY_TO_WEIGHT)
        if unknown:
            raise ValueError(f"JSISNet: loss_weights has unknown loss keys {sorted(unknown)}")
        self.loss_weights = dict(loss_weights)
        self.num_classes = num_classes
        self.num_things = num_things
        self.merge_name = merge
        self.panoptic_on = panoptic_on and self.semantic_on and self.instance_on
        self.stuff_area_thresh = stuff_area_thresh
        self.instance_score_thresh = instance_score_thresh
        self.mask_threshold = mask_threshold
        self.kirillov_overlap_thresh = kirillov_overlap_thresh
        self.register_buffer("is_thing", torch.arange(num_classes) < num_things, persistent=False)
        if roi_heads is not None and separable_roi_align:
            use_separable_roi_align(roi_heads)
        self.precision = PrecisionPolicy(train_dtype, test_dtype, channels_last)
        self.precision.attach(self)

    @property
    def train_dtype(self) -> torch.dtype:
        return self.precision.train_dtype

    @property
    def test_dtype(self) -> torch.dtype:
        return self.precision.test_dtype

    @classmethod
    def from_config(cls, cfg):
        branches = list(cfg.MODEL.JSIS.BRANCHES)
        bad = [b for b in branches if b not in BRANCHES]
        if not branches or bad or len(set(branches)) != len(branches):
            raise ValueError(
                f"MODEL.JSIS.BRANCHES must be a non-empty list of distinct names from "
                f"{list(BRANCHES)}, got {branches}" + (f" (unknown: {bad})" if bad else "")
            )
        for key in _D2_WEIGHT_KEYS:
            node, name = key.split(".")
            if cfg.MODEL[node][name] != 1.0:
                raise ValueError(
                    f"MODEL.{key} = {cfg.MODEL[node][name]}: JSIS-Net weights its losses with "
                    f"MODEL.JSIS.LOSS_WEIGHTS (paper lambdas); keep MODEL.{key} at 1.0 to avoid "
                    "weighting a loss twice"
                )
        instance_on = "instance" in branches
        semantic_on = "semantic" in branches
        if instance_on and not cfg.MODEL.MASK_ON:
            raise ValueError(
                "MODEL.MASK_ON must be True: JSIS-Net's instance branch predicts masks"
            )
        if instance_on and cfg.MODEL.KEYPOINT_ON:
            raise ValueError("MODEL.KEYPOINT_ON is not supported by JSIS-Net")

        ret = super().from_config(cfg)  # backbone, RPN, ROI heads, input format, pixel stats
        if not instance_on:
            ret.update(proposal_generator=None, roi_heads=None, vis_period=0)
        lw = cfg.MODEL.JSIS.LOSS_WEIGHTS
        shapes = ret["backbone"].output_shape()
        ret.update(
            sem_seg_head=build_sem_seg_head(cfg, shapes) if semantic_on else None,
            loss_weights={
                k: float(lw[w])
                for k, w in LOSS_KEY_TO_WEIGHT.items()
                if (semantic_on if k == "loss_sem_seg" else instance_on)
            },
            num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            num_things=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            merge=cfg.MODEL.JSIS.MERGE,
            panoptic_on=cfg.MODEL.JSIS.PANOPTIC_ON,
            stuff_area_thresh=cfg.MODEL.JSIS.STUFF_AREA_THRESH,
            instance_score_thresh=cfg.MODEL.JSIS.INSTANCE_SCORE_THRESH,
            mask_threshold=cfg.MODEL.JSIS.MASK_THRESHOLD,
            kirillov_overlap_thresh=cfg.MODEL.JSIS.KIRILLOV_OVERLAP_THRESH,
            train_dtype=training_dtype(cfg),
            test_dtype=inference_dtype(cfg),
            channels_last=cfg.MODEL.JSIS.CHANNELS_LAST,
            separable_roi_align=cfg.MODEL.JSIS.SEPARABLE_ROI_ALIGN,
        )
        return ret

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: list of JSISDatasetMapper dicts: "image" uint8 [3, H', W']; in
                training also "sem_seg" int64 [H', W'] (semantic branch) and "instances"
                (gt_boxes, gt_classes in [0, T), gt_masks; instance branch).
        Returns:
            training: dict of WEIGHTED losses (lambda * Detectron2 loss), keys of the enabled
                branches among LOSS_KEY_TO_WEIGHT. Inference: see :meth:`inference`.
        """
        if not self.training:
            return self.inference(batched_inputs)
        with self.precision.autocast(self.device):
            losses = self._losses(batched_inputs)
        return self._weight_losses(losses)

    def _losses(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """Unweighted Detectron2 losses of the enabled branches (see :meth:`forward`)."""
        images = self.preprocess_image(batched_inputs)
        with record_function("jsis.backbone"):
            features = self.precision.features(self.backbone, images.tensor)
        losses = {}
        if self.semantic_on:
            if "sem_seg" not in batched_inputs[0]:
                raise ValueError("JSISNet training: the semantic branch needs 'sem_seg' inputs")
            gt_sem_seg = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                self.backbone.size_divisibility,
                self.sem_seg_head.ignore_value,
            ).tensor
            with record_function("jsis.sem_seg_head"):
                _, sem_losses = self.sem_seg_head(features, gt_sem_seg)
            losses.update(sem_losses)
        if self.instance_on:
            if "instances" not in batched_inputs[0]:
                raise ValueError("JSISNet training: the instance branch needs 'instances' inputs")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            with record_function("jsis.rpn"):
                proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
            with record_function("jsis.roi_heads"):
                _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
            if self.vis_period > 0:
                from detectron2.utils.events import get_event_storage

                if get_event_storage().iter % self.vis_period == 0:
                    self.visualize_training(batched_inputs, proposals)
            losses.update(proposal_losses)
            losses.update(detector_losses)
        return losses

    def _weight_losses(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        unknown = set(losses) - set(self.loss_weights)
        if unknown:
            raise KeyError(
                f"JSISNet: no lambda for loss key(s) {sorted(unknown)} "
                f"(known: {sorted(LOSS_KEY_TO_WEIGHT)})"
            )
        return {k: v.float() * self.loss_weights[k] for k, v in losses.items()}

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """
        Args:
            batched_inputs: list of dicts with "image" uint8 [3, H', W'] and optionally
                "height", "width" (the ORIGINAL size; default: the input size).
            do_postprocess: map outputs to the original size and merge (True), or return the
                raw outputs at the network input size (False).
        Returns:
            do_postprocess=True: one dict per image, at the original size (H, W), keys of the
            enabled branches only:

            * "sem_seg": float [K, H, W] logits (contiguous classes).
            * "instances": Instances (H, W): pred_boxes (XYXY), scores, pred_classes int64 in
              [0, T) (= contiguous index), pred_masks bool [N, H, W] (prob >= MASK_THRESHOLD).
            * "proposals": Instances (H, W): proposal_boxes, objectness_logits.
            * "panoptic_seg": (int32 [H, W] segment ids, segments_info) from the merge
              (both branches and MODEL.JSIS.PANOPTIC_ON).

            do_postprocess=False: one dict per image at the padded input size: "sem_seg" float
            [K, Hp, Wp] logits; "instances" (pred_masks float [N, 1, M, M] probabilities) and
            "proposals" in input coordinates.
        """
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        n = len(batched_inputs)
        sem_seg_results = [None] * n
        detector_results = [None] * n
        proposals = [None] * n
        run = self.precision.run  # module(...), with the cast-once low-precision weights
        with self.precision.autocast(self.device):
            features = self.precision.features(self.backbone, images.tensor)
            if self.semantic_on:
                sem_seg_results, _ = run(
                    self.sem_seg_head, features, None, output_size=tuple(images.tensor.shape[-2:])
                )
            if self.instance_on:
                proposals, _ = run(self.proposal_generator, images, features, None)
                detector_results, _ = run(self.roi_heads, images, features, proposals, None)
        # the boundary: everything after is float32
        sem_seg_results, proposals, detector_results = self.precision.float32(
            sem_seg_results, proposals, detector_results
        )

        outputs = []
        for i, (inp, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            out = {}
            if not do_postprocess:
                if self.semantic_on:
                    out["sem_seg"] = sem_seg_results[i]
                if self.instance_on:
                    out["instances"] = detector_results[i]
                    out["proposals"] = proposals[i]
                outputs.append(out)
                continue
            height = int(inp.get("height", image_size[0]))
            width = int(inp.get("width", image_size[1]))
            if self.semantic_on:
                out["sem_seg"] = sem_seg_postprocess(sem_seg_results[i], image_size, height, width)
            if self.instance_on:
                out["instances"], mask_probs, keep = self.postprocess_instances(
                    detector_results[i], height, width
                )
                out["proposals"] = detector_postprocess(proposals[i], height, width)
            if self.panoptic_on:
                out["panoptic_seg"] = self.merge(out["sem_seg"], out["instances"], mask_probs, keep)
            outputs.append(out)
        return outputs

    def postprocess_instances(
        self, results: Instances, height: int, width: int, merge_probs: Optional[bool] = None
    ):
        """ROI-head output (input coordinates, pred_masks [N, 1, M, M] probabilities) ->

        * Instances at (height, width): boxes scaled (x and y apart) and clipped, empty boxes
          dropped, pred_masks bool [N, H, W] (pasted probability >= MASK_THRESHOLD);
        * float [N', H, W] pasted probabilities of the N' instances with score >=
          INSTANCE_SCORE_THRESH (only those go to the merge; None when there is no merge:
          ``merge_probs`` False, default ``self.panoptic_on``);
        * int64 [N'] their indices in the returned Instances.

        Each mask is pasted once (:func:`paste_masks_once`); the bool masks
        are those probabilities thresholded (what ``paste_masks_in_image`` would give).
        """
        roi_probs = results.pred_masks[:, 0]
        results.remove("pred_masks")
        results.roi_mask_probs = roi_probs
        r = detector_postprocess(results, height, width)  # scales + clips boxes, drops empty
        roi_probs = r.roi_mask_probs
        r.remove("roi_mask_probs")
        if self.panoptic_on if merge_probs is None else merge_probs:
            keep = torch.nonzero(r.scores >= self.instance_score_thresh, as_tuple=True)[0]
        else:
            keep = None
        r.pred_masks, probs = paste_masks_once(
            roi_probs,
            r.pred_boxes.tensor,
            height,
            width,
            self.mask_threshold,
            keep if keep is not None else r.scores.new_zeros(0, dtype=torch.long),
        )
        if keep is None:
            return r, None, None
        return r, probs, keep

    def merge(self, sem_seg: torch.Tensor, instances: Instances, mask_probs, keep):
        """Panoptic merge (MODEL.JSIS.MERGE) of one image's outputs at its original size.

        Args:
            sem_seg: float [K, H, W] logits. instances: the :meth:`postprocess_instances`
                Instances; mask_probs float [N', H, W] and keep int64 [N'] from it.
        Returns:
            (int32 [H, W] segment ids, segments_info); a thing's "instance_id" indexes
            ``instances``.
        """
        inst = Instances(
            instances.image_size,
            pred_masks=mask_probs,
            scores=instances.scores[keep],
            pred_classes=instances.pred_classes[keep],
        )
        pan, info = self._merge_fn(
            sem_seg,
            inst,
            self.is_thing,
            stuff_area_thresh=self.stuff_area_thresh,
            instance_score_thresh=self.instance_score_thresh,
            mask_threshold=self.mask_threshold,
            overlap_thresh=self.kirillov_overlap_thresh,
        )
        keep_l = keep.tolist()
        for s in info:  # instance_id: index into the returned "instances"
            if s["isthing"]:
                s["instance_id"] = keep_l[s["instance_id"]]
        return pan, info
