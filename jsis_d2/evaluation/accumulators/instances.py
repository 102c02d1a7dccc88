"""COCO AP, AP50, AP75 of ``instances`` outputs on masks ("segm") and boxes ("bbox"), with
pycocotools' ``COCOeval`` on a dataset built in memory (no Detectron2 compiled code): the
non-crowd thing segments of the ground-truth PNG as RLE, crowd segments as ``iscrowd=1``.

Id space: COCO "category_id" here is the CONTIGUOUS thing class index in [0, T), for the
ground truth and the predictions alike.
"""

import contextlib
import io
import logging
from typing import Dict, List, Sequence

import numpy as np

from jsis_d2.evaluation.accumulators.ground_truth import ImageGroundTruth

__all__ = ["CocoInstancesAccumulator", "coco_ap"]

logger = logging.getLogger(__name__)

#: COCOeval iou type -> the prediction key it needs
IOU_TYPES = (("segm", "segmentation"), ("bbox", "bbox"))


class CocoInstancesAccumulator:
    """COCO images, ground-truth annotations and detections of the processed images.

    Args:
        thing_names: the T thing class names, by contiguous index.
        dataset_name: named in the warnings.
    """

    key = "instances"

    def __init__(self, thing_names: Sequence[str], dataset_name: str = ""):
        self._names = list(thing_names)
        self._dataset_name = dataset_name
        self._images: List[Dict] = []
        self._gt: List[Dict] = []  # without "id": numbered when merged
        self._dt: List[Dict] = []

    def process(self, gt: ImageGroundTruth, instances) -> None:
        """Accumulate one image.

        Args:
            instances: Detectron2 ``Instances`` with ``scores`` [N], ``pred_classes`` [N] in
                [0, T), and ``pred_masks`` bool [N, H, W] and/or ``pred_boxes`` (XYXY).
        """
        from pycocotools import mask as mask_util

        h, w = gt.shape
        self._images.append({"id": gt.image_id, "height": h, "width": w})
        self._gt.extend(self._gt_annotations(gt))
        instances = instances.to("cpu")
        n = len(instances)
        if n == 0:
            return
        scores = instances.scores.tolist()
        classes = instances.pred_classes.tolist()
        boxes = instances.pred_boxes.tensor.numpy().copy() if instances.has("pred_boxes") else None
        rles = [None] * n
        if instances.has("pred_masks"):
            masks = instances.pred_masks.numpy()
            gt.check_shape(masks.shape[1:], "instances.pred_masks")
            rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for i in range(n):
            d = {"image_id": gt.image_id, "category_id": int(classes[i]), "score": float(scores[i])}
            if rles[i] is not None:
                d["segmentation"] = rles[i]
            if boxes is not None:
                x0, y0, x1, y1 = boxes[i].tolist()
                d["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            self._dt.append(d)

    def _gt_annotations(self, gt: ImageGroundTruth) -> List[Dict]:
        """COCO annotations (RLE from the PNG, box XYWH) of the thing segments of one image."""
        from pycocotools import mask as mask_util

        anns = []
        for sid, k, crowd in gt.things(len(self._names)):
            rle = mask_util.encode(np.asfortranarray((gt.ids == sid).astype(np.uint8)))
            anns.append(
                {
                    "image_id": gt.image_id,
                    "category_id": k,
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": gt.box_xywh(sid),
                    "iscrowd": int(crowd),
                }
            )
        return anns

    def state(self) -> Dict[str, List[Dict]]:
        """Picklable: the COCO "images", ground-truth "gt" and detection "dt" dicts."""
        return {"images": self._images, "gt": self._gt, "dt": self._dt}

    def results(self, states: List[Dict]) -> Dict[str, Dict]:
        """{"segm": ..., "bbox": ...}, each {"AP", "AP50", "AP75"} in percent, over all states.

        An iou type is left out when there are detections but none has its key (a model without
        masks); no detections at all gives 0; no ground-truth instance gives NaN.
        """
        images = [im for s in states for im in s["images"]]
        gt_anns = [dict(a, id=i + 1) for i, a in enumerate(a for s in states for a in s["gt"])]
        dts = [d for s in states for d in s["dt"]]
        out = {}
        for iou_type, key in IOU_TYPES:
            preds = [dict(d) for d in dts if key in d]  # copies: loadRes adds "id", "area"
            if dts and not preds:
                continue
            if not gt_anns:
                logger.warning(
                    "%s AP: no ground-truth instances in %s", iou_type, self._dataset_name
                )
                out[iou_type] = {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
            elif not preds:
                logger.warning("%s AP: the model predicted no instances: AP = 0", iou_type)
                out[iou_type] = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
            else:
                out[iou_type] = coco_ap(images, gt_anns, preds, self._names, iou_type)
        return out


def coco_ap(
    images: List[Dict],
    gt_anns: List[Dict],
    preds: List[Dict],
    thing_names: Sequence[str],
    iou_type: str,
) -> Dict[str, float]:
    """{"AP", "AP50", "AP75"} in percent (NaN where COCOeval has none) of ``preds`` against
    ``gt_anns`` (COCO dicts, "category_id" in [0, T), numbered "id"s) with ``COCOeval``.

    pycocotools prints its summary; it is logged instead.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = [{"id": k, "name": name} for k, name in enumerate(thing_names)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": [dict(a) for a in gt_anns],
            "categories": cats,
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(preds)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    summary = [ln for ln in buf.getvalue().splitlines() if ln.lstrip().startswith("Av")]
    logger.info("COCO %s evaluation:\n%s", iou_type, "\n".join(summary))
    s = ev.stats
    return {
        name: (100 * float(v) if v >= 0 else float("nan"))
        for name, v in (("AP", s[0]), ("AP50", s[1]), ("AP75", s[2]))
    }
