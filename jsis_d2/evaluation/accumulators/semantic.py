"""Semantic mIoU (fwIoU, mACC, pACC, per-class IoU) of ``sem_seg`` outputs from a K x K
confusion matrix, with the definitions of Detectron2's ``SemSegEvaluator``.

Id space: CONTIGUOUS class indices in [0, K) (things first), for prediction and ground truth.
"""

from typing import Dict, List, Sequence

import numpy as np
import torch

from jsis_d2.data.ids import IdIndex
from jsis_d2.evaluation.accumulators.ground_truth import ImageGroundTruth
from jsis_d2.evaluation.pq import PanopticEvalError, joint_histogram

__all__ = ["SemSegAccumulator", "sem_seg_metrics"]


class SemSegAccumulator:
    """Pixel confusion matrix of ``sem_seg.argmax(0)`` against the ground truth's classes.

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
    (rows: ground truth, columns: prediction).

    mIoU averages the classes present in the ground truth or the prediction; mACC and fwIoU
    the classes present in the ground truth. NaN where nothing is defined.
    """
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
        if total
        else float("nan"),
        "mACC": 100 * float(acc[acc_valid].mean()) if acc_valid.any() else float("nan"),
        "pACC": 100 * float(tp.sum() / total) if total else float("nan"),
    }
    for name, v in zip(class_names, iou):
        res[f"IoU-{name}"] = 100 * float(v)
    return res
