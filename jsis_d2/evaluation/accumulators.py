"""Per-output accumulators of :class:`jsis_d2.evaluation.JSISEvaluator`, and the ground truth
they share (:func:`read_ground_truth`, once per image).

Each accumulator consumes one key of the model's output dict (its class attribute ``key``) and
offers:

- ``process(gt, output)``: accumulate one image, given its :class:`ImageGroundTruth` and
  ``output[key]``;
- ``state()``: what it accumulated, picklable (gathered across processes with ``comm.gather``);
- ``results(states)``: its result sections (``{"panoptic_seg": {...}}`` etc.) from the states
  of every process (a non-empty list).

Id spaces: ground truth and outputs carry CONTIGUOUS class indices in [0, K) (things first,
``k < T``; the COCO ``category_id`` of the instance evaluation is that index too); panoptic
maps carry segment ids (0 = void); the saved panoptic files carry DATASET category ids
(converted with :class:`LabelSpace`).
"""

import contextlib
import io
import json
import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from jsis_d2.data.ids import IdIndex
from jsis_d2.data.label_space import LabelSpace
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.evaluation.accumulator_base import Accumulator
from jsis_d2.evaluation.pq import (
    GROUPS,
    PanopticEvalError,
    PQStats,
    SegmentTable,
    check_size,
    image_pq_stats,
    joint_histogram,
    log_area_mismatches,
    read_segment_ids,
    segment_table,
)

from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, pairwise_iou

__all__ = [
    "ImageGroundTruth",
    "read_ground_truth",
    "PanopticAccumulator",
    "SemSegAccumulator",
    "CocoInstancesAccumulator",
    "ProposalRecallAccumulator",
    "rpn_recall",
]

logger = logging.getLogger(__name__)

PANOPTIC_DIRNAME = "panoptic_predictions"


# ----------------------------------------------------------------------------- ground truth


@dataclass(frozen=True, eq=False)
class ImageGroundTruth:
    """The ground truth of one image.

    Attributes:
        image_id: the dataset dict's ``image_id``.
        file_name: path of the ground-truth panoptic PNG.
        where: "image <id> (<file_name>)", the prefix of error messages.
        ids: uint32 [H, W] panoptic segment ids (0 = void).
        segments: :func:`segment_table` of ``segments_info`` (rows sorted by segment id,
            ``cats`` = contiguous class indices, ``index`` = :class:`IdIndex` with void row 0).
        info: the dataset dict's ``segments_info`` items by segment id (contiguous
            ``category_id``, ``iscrowd``, optional ``bbox`` XYWH and ``area``).
    """

    image_id: object
    file_name: str
    where: str
    ids: np.ndarray
    segments: SegmentTable
    info: Dict[int, Dict]

    def check_shape(self, shape, what: str) -> None:
        """PanopticEvalError unless ``shape`` (trailing dims H, W) is the ground truth's."""
        check_size(self.where, what, shape, self.ids.shape)

    def things(self, num_things: int, crowd: bool = True) -> List[Tuple[int, int, bool]]:
        """(segment id, contiguous class in [0, num_things), iscrowd) of the thing segments,
        by ascending id; ``crowd=False`` leaves the crowd segments out."""
        s = self.segments
        return [
            (sid, k, c)
            for sid, k, c in zip(s.ids.tolist(), s.cats.tolist(), s.iscrowd.tolist())
            if k < num_things and (crowd or not c)
        ]

    def box_xywh(self, segment_id: int) -> List[float]:
        """Box [x, y, w, h] of a segment: its ``bbox`` in segments_info, else the tight box
        of its pixels in the PNG (``w = x_max - x_min + 1``)."""
        box = self.info[segment_id].get("bbox")
        if box is None:
            ys, xs = np.nonzero(self.ids == segment_id)
            if len(xs) == 0:
                raise PanopticEvalError(
                    f"{self.where} (ground truth): segment {segment_id} is in segments_info but "
                    "has no pixel in the PNG (and no 'bbox')"
                )
            box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        return [float(v) for v in box]


def read_ground_truth(inp: Dict, num_classes: int) -> ImageGroundTruth:
    """Read the ground truth of one dataset dict.

    Args:
        inp: dataset dict with "image_id", "pan_seg_file_name", "segments_info" (contiguous
            "category_id" in [0, num_classes)) and optional "height", "width".
    Raises:
        PanopticEvalError (naming the image and file) when the PNG cannot be read, its size
        differs from the dict's height/width, or segments_info is malformed.
    """
    gt_file = inp["pan_seg_file_name"]
    image_id = inp["image_id"]
    where = f"image {image_id!r} ({gt_file})"
    ids = read_segment_ids(gt_file, f"image {image_id!r}")
    h, w = int(inp.get("height", ids.shape[0])), int(inp.get("width", ids.shape[1]))
    if ids.shape != (h, w):
        raise PanopticEvalError(
            f"{where}: ground-truth PNG is {ids.shape[1]}x{ids.shape[0]} (WxH) but the "
            f"dataset dict says {w}x{h}"
        )
    cat_index = {k: k for k in range(num_classes)}
    segments_info = inp["segments_info"]
    table = segment_table(segments_info, cat_index, where, use_area=True)
    info = {int(s["id"]): s for s in segments_info}
    return ImageGroundTruth(image_id, gt_file, where, ids, table, info)


# ----------------------------------------------------------------------------- panoptic_seg


class PanopticAccumulator(Accumulator):
    """PQ / SQ / RQ (:class:`PQStats` sums) of ``panoptic_seg`` outputs, panopticapi's rules.

    Args:
        labels: the dataset's label space (K classes, T things).
        label_divisor: for Detectron2-style outputs without segments_info, where the map holds
            ``class * label_divisor + instance`` (-1 = void).
        output_dir: when set, each prediction is written to
            ``output_dir/panoptic_predictions/<path of the GT PNG below gt_root>`` as it is
            processed (``a/img0.png`` and ``b/img0.png`` stay two files), and :meth:`results`
            writes ``output_dir/panoptic_predictions.json`` for all images, so
            ``pq_compute(gt_json, that_json)`` re-evaluates them.
        gt_root: the folder of the ground-truth PNGs (metadata ``panoptic_root``). None, or
            a PNG outside it: the prediction is named by its image id (``<id>.png``, the id
            %-escaped), unique as the ids are.
    """

    key = "panoptic_seg"

    def __init__(
        self,
        labels: LabelSpace,
        label_divisor: int = 1000,
        output_dir: Optional[str] = None,
        gt_root: Optional[str] = None,
    ):
        self._labels = labels
        self._gt_root = gt_root
        self._label_divisor = int(label_divisor)
        self._output_dir = output_dir
        self._cat_index = {k: k for k in range(labels.num_classes)}
        self._pq = PQStats(labels.num_classes)
        self._annotations: List[Dict] = []  # saved predictions, dataset ids
        self._area_mismatches: List = []  # GT segments whose JSON area disagrees with the PNG

    def process(self, gt: ImageGroundTruth, panoptic_seg) -> None:
        """Accumulate one image.

        Args:
            panoptic_seg: (ids int [H, W], segments_info) with segment ids (0 = void) and
                contiguous "category_id"; or (ids, None), Detectron2's convention (see
                ``label_divisor``).
        """
        pan, segments_info = panoptic_seg
        pan = pan.cpu().numpy() if isinstance(pan, torch.Tensor) else np.asarray(pan)
        pan = pan.astype(np.int64)
        if segments_info is None:
            segments_info, pan = self._segments_from_labels(pan)
        gt.check_shape(pan.shape, "panoptic_seg")
        pred = segment_table(segments_info, self._cat_index, f"{gt.where} (prediction)")
        stats = image_pq_stats(
            gt.ids,
            gt.segments,
            pan,
            pred,
            gt.where,
            f"{gt.where} (ground truth)",
            f"{gt.where} (predicted panoptic_seg)",
        )
        self._pq.add_image(stats)
        if stats.area_mismatch is not None:
            self._area_mismatches.append(stats.area_mismatch)
        if self._output_dir:
            self._save(gt, pan, segments_info)

    def _segments_from_labels(self, pan: np.ndarray):
        """segments_info and ids (label + 1, void 0) of a ``class * divisor + instance`` map."""
        segments_info = []
        for label in np.unique(pan).tolist():
            if label >= 0:
                k = label // self._label_divisor
                segments_info.append(
                    {"id": label + 1, "category_id": k, "isthing": k < self._labels.num_things}
                )
        return segments_info, pan + 1  # -1 (void) -> 0

    def _save(self, gt: ImageGroundTruth, pan: np.ndarray, segments_info: List[Dict]) -> None:
        name = self._prediction_name(gt)
        path = os.path.join(self._output_dir, PANOPTIC_DIRNAME, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_panoptic_png(path, pan)
        segs = []
        for s in segments_info:
            k = int(s["category_id"])
            d = {"id": int(s["id"]), "category_id": self._labels.to_dataset_id(k)}
            d["isthing"] = int(self._labels.is_thing[k])
            d.update(
                {key: cast(s[key]) for key, cast in (("area", int), ("score", float)) if key in s}
            )
            segs.append(d)
        self._annotations.append(
            {"image_id": gt.image_id, "file_name": name, "segments_info": segs}
        )

    def _prediction_name(self, gt: ImageGroundTruth) -> str:
        """The saved PNG's path below panoptic_predictions/ (see the class docstring)."""
        if self._gt_root:
            rel = os.path.relpath(os.path.abspath(gt.file_name), os.path.abspath(self._gt_root))
            if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
                return os.path.splitext(rel)[0].replace(os.sep, "/") + ".png"
        return urllib.parse.quote(str(gt.image_id), safe="") + ".png"

    def state(self) -> Dict:
        """Picklable: float64 [4, K] PQ sums, the saved annotations, the area mismatches."""
        return {
            "pq": self._pq.sums,
            "annotations": self._annotations,
            "area_mismatches": self._area_mismatches,
        }

    def results(self, states: List[Dict]) -> Dict[str, Dict]:
        """{"panoptic_seg": PQ, SQ, RQ, N (percent; _th / _st for things / stuff) and
        PQ-/SQ-/RQ-<class name> (NaN for a class with no TP, FP or FN)} over all ``states``;
        writes the predictions' JSON when saving."""
        log_area_mismatches([m for s in states for m in s["area_mismatches"]])
        if self._output_dir:
            self._write_json([a for s in states for a in s["annotations"]])
        pq = PQStats(self._labels.num_classes)
        pq.sums += sum(s["pq"] for s in states)
        res = {}
        for _, suffix, which in GROUPS:
            avg = pq.average(self._labels.is_thing, which)
            for key in ("pq", "sq", "rq"):
                res[key.upper() + suffix] = 100 * avg[key]
            res["N" + suffix] = avg["n"]
        for name, r in zip(self._labels.names, pq.per_class()):
            for key in ("pq", "sq", "rq"):
                res[f"{key.upper()}-{name}"] = float("nan") if r is None else 100 * r[key]
        return {"panoptic_seg": res}

    def _write_json(self, annotations: List[Dict]) -> None:
        path = os.path.join(self._output_dir, PANOPTIC_DIRNAME + ".json")
        cats = [
            {"id": c["id"], "name": c["name"], "isthing": int(bool(c["isthing"]))}
            for c in self._labels.categories
        ]
        with open(path, "w") as f:
            json.dump({"annotations": annotations, "categories": cats}, f)
        logger.info("Wrote %d panoptic predictions to %s", len(annotations), path)


# ----------------------------------------------------------------------------- sem_seg


class SemSegAccumulator(Accumulator):
    """Pixel confusion matrix [K, K] of ``sem_seg.argmax(0)`` against the ground truth's
    classes, for mIoU etc. (:func:`sem_seg_metrics`).

    Void pixels are ignored; crowd pixels count with their category unless ``crowd_ignore``.

    Args:
        class_names: the K class names, by contiguous index.
        crowd_ignore: leave the pixels of crowd segments out.
    """

    key = "sem_seg"

    def __init__(self, class_names: Sequence[str], crowd_ignore: bool = False):
        self._names = list(class_names)
        k = len(self._names)
        self._crowd_ignore = bool(crowd_ignore)
        self._class_index = IdIndex(np.arange(k), with_void=False)
        self._conf = np.zeros((k, k), dtype=np.int64)  # [gt class, predicted class] pixels

    def process(self, gt: ImageGroundTruth, sem_seg: torch.Tensor) -> None:
        """Accumulate one image; ``sem_seg``: float [K, H, W] class scores."""
        k = len(self._names)
        if sem_seg.dim() != 3 or sem_seg.shape[0] != k:
            raise PanopticEvalError(
                f"{gt.where}: sem_seg must be [K={k}, H, W], got {tuple(sem_seg.shape)}"
            )
        pred = sem_seg.argmax(dim=0).to(torch.int32).cpu().numpy()  # [H, W] class index
        gt.check_shape(pred.shape, "sem_seg")
        seg = gt.segments
        hist = joint_histogram(  # [Ng + 1, K]: row 0 = void, then the GT segments
            gt.ids,
            seg.index,
            pred,
            self._class_index,
            f"{gt.where} (ground truth)",
            f"{gt.where} (sem_seg)",
        )
        rows = ~seg.iscrowd if self._crowd_ignore else np.ones(len(seg.ids), dtype=bool)
        np.add.at(self._conf, seg.cats[rows], hist[1:][rows])

    def state(self) -> np.ndarray:
        """Picklable: int64 [K, K] confusion matrix (rows: ground truth, columns: prediction)."""
        return self._conf

    def results(self, states: List[np.ndarray]) -> Dict[str, Dict]:
        """{"sem_seg": metrics} of the summed confusion matrices (see :func:`sem_seg_metrics`)."""
        return {"sem_seg": sem_seg_metrics(sum(states), self._names)}


def sem_seg_metrics(conf: np.ndarray, class_names: Sequence[str]) -> Dict[str, float]:
    """mIoU, fwIoU, mACC, pACC and IoU-<class name>, in percent, of a [K, K] confusion matrix
    (rows: ground truth, columns: prediction), Detectron2's ``SemSegEvaluator`` definitions.

    mIoU averages the classes present in the ground truth or the prediction; mACC and fwIoU
    the classes present in the ground truth. NaN where nothing is defined.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    pos_gt = conf.sum(1)
    union = pos_gt + conf.sum(0) - tp
    acc_valid = pos_gt > 0
    iou_valid = union > 0
    iou = np.full(len(tp), np.nan)
    acc = np.full(len(tp), np.nan)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    total = pos_gt.sum()
    nan = float("nan")
    res = {
        "mIoU": 100 * float(iou[iou_valid].mean()) if iou_valid.any() else nan,
        "fwIoU": 100 * float((iou[acc_valid] * pos_gt[acc_valid]).sum() / total) if total else nan,
        "mACC": 100 * float(acc[acc_valid].mean()) if acc_valid.any() else nan,
        "pACC": 100 * float(tp.sum() / total) if total else nan,
    }
    for name, v in zip(class_names, iou):
        res[f"IoU-{name}"] = 100 * float(v)
    return res


# ----------------------------------------------------------------------------- instances

#: COCOeval iou type -> the prediction key it needs
IOU_TYPES = (("segm", "segmentation"), ("bbox", "bbox"))


class CocoInstancesAccumulator(Accumulator):
    """COCO AP, AP50, AP75 of ``instances`` outputs on masks ("segm") and boxes ("bbox"), with
    pycocotools' ``COCOeval`` on a dataset built in memory: the non-crowd thing segments of the
    ground-truth PNG as RLE, crowd segments as ``iscrowd=1``.

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
            instances: Detectron2 ``Instances`` with ``pred_boxes`` (XYXY), ``scores`` [N],
                ``pred_classes`` [N] in [0, T) and, optionally, ``pred_masks`` bool [N, H, W].
        """
        from pycocotools import mask as mask_util

        h, w = gt.ids.shape
        self._images.append({"id": gt.image_id, "height": h, "width": w})
        for sid, k, crowd in gt.things(len(self._names)):
            rle = mask_util.encode(np.asfortranarray((gt.ids == sid).astype(np.uint8)))
            self._gt.append(
                {
                    "image_id": gt.image_id,
                    "category_id": k,
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": gt.box_xywh(sid),
                    "iscrowd": int(crowd),
                }
            )
        instances = instances.to("cpu")
        if instances.has("pred_masks"):
            gt.check_shape(instances.pred_masks.shape[1:], "instances.pred_masks")
        self._dt.extend(instances_to_coco_json(instances, gt.image_id))

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


# ----------------------------------------------------------------------------- proposals


class ProposalRecallAccumulator(Accumulator):
    """RPN mean recall of ``proposals`` outputs (paper Table 4): per image, the fraction of
    ground-truth non-crowd thing boxes that some proposal overlaps with IoU >= ``iou_threshold``;
    averaged over images. Images without such boxes have no defined recall and are left out of
    the mean (counted as ``images_without_gt``).

    Args:
        num_things: T; thing classes are the contiguous indices [0, T).
        iou_threshold: a ground-truth box counts as recalled when a proposal has IoU >= this.
    """

    key = "proposals"

    def __init__(self, num_things: int, iou_threshold: float = 0.5):
        self._num_things = int(num_things)
        self._iou = float(iou_threshold)
        self._sums = np.zeros(3, dtype=np.float64)  # sum of recalls, images, images without GT

    def process(self, gt: ImageGroundTruth, proposals) -> None:
        """Accumulate one image; ``proposals``: ``Instances`` with ``proposal_boxes`` (XYXY,
        original image coordinates)."""
        boxes = []
        for sid, _, _ in gt.things(self._num_things, crowd=False):
            x, y, w, h = gt.box_xywh(sid)
            boxes.append([x, y, x + w, y + h])
        if not boxes:
            self._sums[2] += 1
            return
        recall = rpn_recall(torch.tensor(boxes), proposals.proposal_boxes.tensor.cpu(), self._iou)
        self._sums += [recall, 1, 0]

    def state(self) -> np.ndarray:
        """Picklable: float64 [3]: sum of recalls, images with GT boxes, images without."""
        return self._sums

    def results(self, states: List[np.ndarray]) -> Dict[str, Dict]:
        """{"rpn": {"mean_recall" (percent, NaN without images), "num_images",
        "images_without_gt", "iou_threshold"}} over all states."""
        total, n, empty = sum(states).tolist()
        return {
            "rpn": {
                "mean_recall": 100.0 * total / n if n else float("nan"),
                "num_images": int(n),
                "images_without_gt": int(empty),
                "iou_threshold": self._iou,
            }
        }


def rpn_recall(gt_boxes: torch.Tensor, proposal_boxes: torch.Tensor, iou_threshold: float) -> float:
    """Fraction of ground-truth boxes [G, 4] (XYXY) that some proposal [P, 4] (XYXY) overlaps
    with IoU >= ``iou_threshold``. G must be > 0; no proposals gives 0."""
    if len(proposal_boxes) == 0:
        return 0.0
    iou = pairwise_iou(Boxes(gt_boxes.float()), Boxes(proposal_boxes.float()))  # [G, P]
    return float((iou.max(dim=1).values >= iou_threshold).float().mean())
