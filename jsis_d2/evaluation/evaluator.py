"""One-pass JSIS-Net evaluation as a Detectron2 ``DatasetEvaluator``.

For each image it reads the ground-truth panoptic PNG once and, from whatever the model
returned, accumulates:

- ``"panoptic_seg"``: PQ / SQ / RQ for all, things, stuff and per class, from per-category
  TP/FP/FN/IoU sums computed with the same core as :func:`jsis_d2.evaluation.pq_compute`
  (panopticapi's rules). Percent, as Detectron2's ``COCOPanopticEvaluator``.
- ``"sem_seg"``: mIoU (and fwIoU, mACC, pACC, per-class IoU) over all K classes from its own
  K x K confusion matrix of ``sem_seg.argmax(0)`` against the ground truth (void ignored;
  crowd pixels count with their category unless ``crowd_sem_seg="ignore"``). Same
  definitions as Detectron2's ``SemSegEvaluator``: mIoU averages the classes present in the
  ground truth or the prediction.
- ``"segm"`` / ``"bbox"``: COCO AP, AP50, AP75 of ``instances`` (pycocotools ``COCOeval`` on
  masks / boxes, built in memory: non-crowd thing segments of the ground-truth PNG as RLE,
  crowd segments as ``iscrowd=1``; no Detectron2 compiled code).
- ``"rpn"``: mean recall of ``proposals`` (paper Table 4): per image, the fraction of ground-truth
  non-crowd thing boxes that some proposal overlaps with IoU >= ``rpn_recall_iou``, averaged
  over images. Images without ground-truth thing boxes have no defined recall and are left out
  of the mean (their count is reported as ``images_without_gt``).

A section is reported only when its output key was present (a disabled branch gives no key).
Distributed: each process accumulates fixed-size arrays (plus the instance predictions, as
Detectron2's COCO evaluator does); ``evaluate()`` gathers them on the main process, which
returns the results; other processes return ``{}``.

When ``output_dir`` is given and ``save_panoptic`` is on, panoptic predictions are written in
COCO panoptic format with DATASET category ids: ``output_dir/panoptic_predictions/<name>.png``
(name of the ground-truth PNG) and ``output_dir/panoptic_predictions.json``, so
``pq_compute(gt_json, output_dir + "/panoptic_predictions.json")`` re-evaluates them.

Id spaces: inputs (dataset dicts) and outputs carry CONTIGUOUS category indices in [0, K)
(things first, ``k < T``); files carry dataset ids (converted with :class:`LabelSpace`).
"""
import contextlib
import copy
import io
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils import comm
from tabulate import tabulate

from jsis_d2.data.label_space import LabelSpace
from jsis_d2.data.panoptic_png import read_panoptic_png, write_panoptic_png
from jsis_d2.evaluation.pq import (
    IdIndex,
    PanopticEvalError,
    PQStats,
    joint_histogram,
    log_area_mismatches,
    pq_stats_from_histogram,
    segment_table,
)

__all__ = ["JSISEvaluator"]

logger = logging.getLogger(__name__)

PANOPTIC_DIRNAME = "panoptic_predictions"


class JSISEvaluator(DatasetEvaluator):
    """PQ/SQ/RQ, semantic mIoU, instance AP (AP50) and RPN recall in one pass.

    Args:
        dataset_name: a dataset registered with jsis_d2 metadata (``categories`` etc., see
            :meth:`LabelSpace.metadata`).
        output_dir: where panoptic predictions (and nothing else) are saved; None: not saved.
        distributed: gather across processes in :meth:`evaluate`.
        rpn_recall_iou: a ground-truth box counts as recalled when a proposal has IoU >= this.
        save_panoptic: write the panoptic predictions under ``output_dir``.
        crowd_sem_seg: "class" (crowd pixels count with their category in mIoU) or "ignore".
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        rpn_recall_iou: float = 0.5,
        save_panoptic: bool = True,
        crowd_sem_seg: str = "class",
    ):
        if crowd_sem_seg not in ("class", "ignore"):
            raise ValueError(f"crowd_sem_seg must be 'class' or 'ignore', got {crowd_sem_seg!r}")
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._labels = LabelSpace.from_metadata(self._metadata)
        self._num_classes = self._labels.num_classes
        self._num_things = self._labels.num_things
        self._label_divisor = int(getattr(self._metadata, "label_divisor", 1000))
        self._output_dir = output_dir
        self._distributed = distributed
        self._rpn_iou = float(rpn_recall_iou)
        self._save = bool(save_panoptic and output_dir)
        self._crowd_ignore = crowd_sem_seg == "ignore"
        self._cat_index = {k: k for k in range(self._num_classes)}
        self._class_index = IdIndex(np.arange(self._num_classes), with_void=False)
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None):
        """Build from a config (TEST.JSIS.*, INPUT.JSIS.CROWD_SEM_SEG)."""
        return cls(
            dataset_name,
            output_dir=output_dir,
            distributed=comm.get_world_size() > 1,
            rpn_recall_iou=cfg.TEST.JSIS.RPN_RECALL_IOU,
            save_panoptic=cfg.TEST.JSIS.SAVE_PANOPTIC,
            crowd_sem_seg=cfg.INPUT.JSIS.CROWD_SEM_SEG,
        )

    # ------------------------------------------------------------------ accumulation

    def reset(self):
        k = self._num_classes
        self._pq = PQStats(k)
        self._conf = np.zeros((k, k), dtype=np.int64)  # [gt class, predicted class] pixels
        self._rpn = np.zeros(3, dtype=np.float64)  # sum of recalls, images, images without GT
        self._coco_images: List[Dict] = []
        self._coco_gt: List[Dict] = []
        self._coco_dt: List[Dict] = []
        self._pan_annotations: List[Dict] = []
        self._seen = {"panoptic_seg": 0, "sem_seg": 0, "instances": 0, "proposals": 0}
        # ground-truth segments whose JSON area disagrees with the PNG (PQ uses the PNG)
        self._area_mismatches: List = []

    def process(self, inputs, outputs):
        """Accumulate one batch.

        Args:
            inputs: dataset dicts with "image_id", "height", "width", "pan_seg_file_name",
                "segments_info" (contiguous "category_id", "iscrowd", optional "bbox" XYWH).
            outputs: per image, any of "panoptic_seg" (int [H, W] ids, segments_info with
                contiguous "category_id"), "sem_seg" (float [K, H, W]), "instances"
                (pred_masks bool [N, H, W], pred_boxes, scores, pred_classes in [0, T)),
                "proposals" (Instances with proposal_boxes, original coordinates).
        """
        for inp, out in zip(inputs, outputs):
            self._process_one(inp, out)

    def _process_one(self, inp, out):
        gt_file = inp["pan_seg_file_name"]
        image_id = inp["image_id"]
        where = f"image {image_id!r} ({gt_file})"
        gt_ids = read_panoptic_png(gt_file, f"image {image_id!r}")
        h, w = int(inp.get("height", gt_ids.shape[0])), int(inp.get("width", gt_ids.shape[1]))
        if gt_ids.shape != (h, w):
            raise PanopticEvalError(
                f"{where}: ground-truth PNG is {gt_ids.shape[1]}x{gt_ids.shape[0]} (WxH) but the "
                f"dataset dict says {w}x{h}"
            )
        gt = segment_table(inp["segments_info"], self._cat_index, where, use_area=True)

        if "panoptic_seg" in out:
            self._seen["panoptic_seg"] += 1
            self._process_panoptic(out["panoptic_seg"], gt_ids, gt, inp, where)
        if "sem_seg" in out:
            self._seen["sem_seg"] += 1
            self._process_sem_seg(out["sem_seg"], gt_ids, gt, where)
        if "instances" in out:
            self._seen["instances"] += 1
            self._process_instances(out["instances"], gt_ids, gt, inp, where)
        if "proposals" in out:
            self._seen["proposals"] += 1
            self._process_proposals(out["proposals"], gt_ids, gt, inp)

    def _process_panoptic(self, panoptic_seg, gt_ids, gt, inp, where):
        pan, segments_info = panoptic_seg
        pan = _to_numpy(pan).astype(np.int64)
        if segments_info is None:  # Detectron2 convention: class * label_divisor + instance
            segments_info, pan = self._segments_from_labels(pan)
        _check_shape(pan.shape, gt_ids.shape, "panoptic_seg", where)
        pred = segment_table(segments_info, self._cat_index, f"{where} (prediction)")
        hist = joint_histogram(
            gt_ids, gt.index, pan, pred.index, f"{where} (ground truth)",
            f"{where} (predicted panoptic_seg)",
        )
        stats = pq_stats_from_histogram(hist, gt, pred, where)
        self._pq.add_image(stats)
        if stats.area_mismatch is not None:
            self._area_mismatches.append(stats.area_mismatch)
        if self._save:
            self._save_panoptic(pan, segments_info, inp)

    def _segments_from_labels(self, pan):
        segments_info = []
        for label in np.unique(pan).tolist():
            if label < 0:
                continue
            k = label // self._label_divisor
            segments_info.append(
                {"id": label + 1, "category_id": k, "isthing": k < self._num_things}
            )
        return segments_info, pan + 1  # -1 (void) -> 0

    def _save_panoptic(self, pan, segments_info, inp):
        folder = os.path.join(self._output_dir, PANOPTIC_DIRNAME)
        os.makedirs(folder, exist_ok=True)
        name = os.path.splitext(os.path.basename(inp["pan_seg_file_name"]))[0] + ".png"
        write_panoptic_png(os.path.join(folder, name), pan)
        segs = []
        for s in segments_info:
            k = int(s["category_id"])
            d = {"id": int(s["id"]), "category_id": self._labels.to_dataset_id(k),
                 "isthing": int(self._labels.is_thing[k])}
            if "area" in s:
                d["area"] = int(s["area"])
            if "score" in s:
                d["score"] = float(s["score"])
            segs.append(d)
        self._pan_annotations.append(
            {"image_id": inp["image_id"], "file_name": name, "segments_info": segs}
        )

    def _process_sem_seg(self, sem_seg, gt_ids, gt, where):
        if sem_seg.dim() != 3 or sem_seg.shape[0] != self._num_classes:
            raise PanopticEvalError(
                f"{where}: sem_seg must be [K={self._num_classes}, H, W], "
                f"got {tuple(sem_seg.shape)}"
            )
        pred = sem_seg.argmax(dim=0).to(torch.int32).cpu().numpy()
        _check_shape(pred.shape, gt_ids.shape, "sem_seg", where)
        hist = joint_histogram(  # [Ng + 1, K]: row 0 = void, then segments
            gt_ids, gt.index, pred, self._class_index, f"{where} (ground truth)",
            f"{where} (sem_seg)",
        )
        rows = np.ones(len(gt.ids), dtype=bool)
        if self._crowd_ignore:
            rows &= ~gt.iscrowd
        np.add.at(self._conf, gt.cats[rows], hist[1:][rows])

    def _gt_instances(self, gt_ids, gt, inp):
        """COCO annotations of the ground-truth things of one image (RLE from the PNG)."""
        from pycocotools import mask as mask_util

        anns = []
        segs = {int(s["id"]): s for s in inp["segments_info"]}
        for sid, k, crowd in zip(gt.ids.tolist(), gt.cats.tolist(), gt.iscrowd.tolist()):
            if k >= self._num_things:
                continue
            m = np.asfortranarray((gt_ids == sid).astype(np.uint8))
            rle = mask_util.encode(m)
            box = segs[sid].get("bbox")
            if box is None:
                box = mask_util.toBbox(rle).tolist()
            anns.append({
                "id": len(self._coco_gt) + len(anns) + 1,  # renumbered after gathering
                "image_id": inp["image_id"], "category_id": k, "segmentation": rle,
                "area": float(mask_util.area(rle)), "bbox": [float(v) for v in box],
                "iscrowd": int(crowd),
            })
        return anns

    def _process_instances(self, instances, gt_ids, gt, inp, where):
        from pycocotools import mask as mask_util

        h, w = gt_ids.shape
        self._coco_images.append({"id": inp["image_id"], "height": h, "width": w})
        self._coco_gt.extend(self._gt_instances(gt_ids, gt, inp))
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
            _check_shape(masks.shape[1:], (h, w), "instances.pred_masks", where)
            rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for i in range(n):
            d = {"image_id": inp["image_id"], "category_id": int(classes[i]),
                 "score": float(scores[i])}
            if rles[i] is not None:
                d["segmentation"] = rles[i]
            if boxes is not None:
                x0, y0, x1, y1 = boxes[i].tolist()
                d["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            self._coco_dt.append(d)

    def _process_proposals(self, proposals, gt_ids, gt, inp):
        boxes = []
        segs = {int(s["id"]): s for s in inp["segments_info"]}
        for sid, k, crowd in zip(gt.ids.tolist(), gt.cats.tolist(), gt.iscrowd.tolist()):
            if k >= self._num_things or crowd:
                continue
            box = segs[sid].get("bbox")
            if box is None:
                ys, xs = np.nonzero(gt_ids == sid)
                box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            x, y, bw, bh = [float(v) for v in box]
            boxes.append([x, y, x + bw, y + bh])
        if not boxes:
            self._rpn[2] += 1
            return
        self._rpn += [rpn_recall(torch.tensor(boxes), proposals.proposal_boxes.tensor.cpu(),
                                 self._rpn_iou), 1, 0]

    # ------------------------------------------------------------------ results

    def _state(self):
        return {
            "pq": self._pq.to_array(), "conf": self._conf, "rpn": self._rpn,
            "coco_images": self._coco_images, "coco_gt": self._coco_gt,
            "coco_dt": self._coco_dt, "pan": self._pan_annotations, "seen": self._seen,
        }

    def evaluate(self):
        log_area_mismatches(self._area_mismatches)  # per process: only this worker's images
        if self._distributed:
            comm.synchronize()
            states = comm.gather(self._state(), dst=0)
            if not comm.is_main_process():
                return {}
        else:
            states = [self._state()]
        seen = {k: sum(s["seen"][k] for s in states) for k in self._seen}
        if not any(seen.values()):
            logger.warning("JSISEvaluator on %s: no outputs were processed", self._dataset_name)
            return {}
        results = OrderedDict()
        if seen["panoptic_seg"]:
            pq = PQStats.from_array(sum(s["pq"] for s in states))
            results["panoptic_seg"] = self._panoptic_results(pq)
            if self._save:
                self._write_panoptic_json([a for s in states for a in s["pan"]])
        if seen["sem_seg"]:
            results["sem_seg"] = self._sem_seg_results(sum(s["conf"] for s in states))
        if seen["instances"]:
            results.update(self._coco_results(states))
        if seen["proposals"]:
            rpn = sum(s["rpn"] for s in states)
            results["rpn"] = {
                "mean_recall": 100.0 * rpn[0] / rpn[1] if rpn[1] else float("nan"),
                "num_images": int(rpn[1]),
                "images_without_gt": int(rpn[2]),
                "iou_threshold": self._rpn_iou,
            }
        self._log(results)
        return results

    def _panoptic_results(self, pq: PQStats) -> Dict:
        isthing = self._labels.is_thing
        res = {}
        for suffix, which in (("", None), ("_th", True), ("_st", False)):
            avg = pq.average(isthing, which)
            res["PQ" + suffix] = 100 * avg["pq"]
            res["SQ" + suffix] = 100 * avg["sq"]
            res["RQ" + suffix] = 100 * avg["rq"]
            res["N" + suffix] = avg["n"]
        for name, r in zip(self._labels.names, pq.per_class()):
            for key in ("pq", "sq", "rq"):
                res[f"{key.upper()}-{name}"] = float("nan") if r is None else 100 * r[key]
        return res

    def _sem_seg_results(self, conf: np.ndarray) -> Dict:
        conf = conf.astype(np.float64)
        tp = np.diag(conf)
        pos_gt = conf.sum(1)
        pos_pred = conf.sum(0)
        union = pos_gt + pos_pred - tp
        acc_valid = pos_gt > 0
        iou_valid = union > 0
        iou = np.full(len(tp), np.nan)
        acc = np.full(len(tp), np.nan)
        iou[iou_valid] = tp[iou_valid] / union[iou_valid]
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        total = pos_gt.sum()
        res = {
            "mIoU": 100 * float(iou[iou_valid].mean()) if iou_valid.any() else float("nan"),
            "fwIoU": 100 * float((iou[acc_valid] * pos_gt[acc_valid]).sum() / total)
            if total else float("nan"),
            "mACC": 100 * float(acc[acc_valid].mean()) if acc_valid.any() else float("nan"),
            "pACC": 100 * float(tp.sum() / total) if total else float("nan"),
        }
        for name, v in zip(self._labels.names, iou):
            res[f"IoU-{name}"] = 100 * float(v)
        return res

    def _coco_results(self, states) -> Dict:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images = [im for s in states for im in s["coco_images"]]
        gt_anns = [dict(a) for s in states for a in s["coco_gt"]]
        dts = [copy.copy(d) for s in states for d in s["coco_dt"]]
        for i, a in enumerate(gt_anns):
            a["id"] = i + 1
        cats = [{"id": k, "name": self._labels.names[k]} for k in range(self._num_things)]
        out = {}
        for iou_type, key in (("segm", "segmentation"), ("bbox", "bbox")):
            preds = [d for d in dts if key in d]
            if dts and not preds:
                continue  # the model gives no masks (or no boxes)
            res = {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
            if not gt_anns:
                logger.warning("%s AP: no ground-truth instances in %s", iou_type,
                               self._dataset_name)
            elif not preds:
                logger.warning("%s AP: the model predicted no instances: AP = 0", iou_type)
                res = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
            else:
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):  # pycocotools prints; we log it
                    coco_gt = COCO()
                    coco_gt.dataset = {"images": images, "annotations": gt_anns,
                                       "categories": cats}
                    coco_gt.createIndex()
                    coco_dt = coco_gt.loadRes(preds)
                    ev = COCOeval(coco_gt, coco_dt, iou_type)
                    ev.evaluate()
                    ev.accumulate()
                    ev.summarize()
                summary = [ln for ln in buf.getvalue().splitlines() if ln.lstrip().startswith("Av")]
                logger.info("COCO %s evaluation:\n%s", iou_type, "\n".join(summary))
                s = ev.stats
                res = {name: (100 * float(v) if v >= 0 else float("nan"))
                       for name, v in (("AP", s[0]), ("AP50", s[1]), ("AP75", s[2]))}
            out[iou_type] = res
        return out

    def _write_panoptic_json(self, annotations):
        path = os.path.join(self._output_dir, PANOPTIC_DIRNAME + ".json")
        cats = [{"id": c["id"], "name": c["name"], "isthing": int(bool(c["isthing"]))}
                for c in self._labels.categories]
        with open(path, "w") as f:
            json.dump({"annotations": annotations, "categories": cats}, f)
        logger.info("Wrote %d panoptic predictions to %s", len(annotations), path)

    def _log(self, results):
        lines = []
        if "panoptic_seg" in results:
            r = results["panoptic_seg"]
            rows = [[name, r["PQ" + s], r["SQ" + s], r["RQ" + s], r["N" + s]]
                    for name, s in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))]
            lines.append(tabulate(rows, headers=["", "PQ", "SQ", "RQ", "#categories"],
                                  tablefmt="pipe", floatfmt=".3f"))
        other = []
        if "sem_seg" in results:
            other.append(["mIoU", results["sem_seg"]["mIoU"]])
        for t in ("segm", "bbox"):
            if t in results:
                other.append([f"{t} AP50", results[t]["AP50"]])
        if "rpn" in results:
            other.append([f"RPN mean recall @IoU{self._rpn_iou:g}", results["rpn"]["mean_recall"]])
        if other:
            lines.append(tabulate(other, headers=["metric", "value"], tablefmt="pipe",
                                  floatfmt=".3f"))
        logger.info("JSIS evaluation on %s:\n%s", self._dataset_name, "\n\n".join(lines))


def rpn_recall(gt_boxes: torch.Tensor, proposal_boxes: torch.Tensor, iou_threshold: float) -> float:
    """Fraction of ground-truth boxes [G, 4] (XYXY) that some proposal [P, 4] (XYXY) overlaps
    with IoU >= ``iou_threshold``. G must be > 0; no proposals gives 0."""
    if len(proposal_boxes) == 0:
        return 0.0
    iou = pairwise_iou(Boxes(gt_boxes.float()), Boxes(proposal_boxes.float()))  # [G, P]
    return float((iou.max(dim=1).values >= iou_threshold).float().mean())


def _to_numpy(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_shape(shape, gt_shape, what, where):
    if tuple(shape) != tuple(gt_shape):
        raise PanopticEvalError(
            f"{where}: {what} is {shape[-1]}x{shape[-2]} (WxH) but the ground truth is "
            f"{gt_shape[1]}x{gt_shape[0]}"
        )
