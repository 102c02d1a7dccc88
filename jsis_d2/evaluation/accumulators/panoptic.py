"""PQ / SQ / RQ of ``panoptic_seg`` outputs, with the same core as :func:`pq_compute`
(panopticapi's rules), and the optional saving of the predictions in COCO panoptic format.

Id spaces: predictions and ground truth carry CONTIGUOUS class indices in [0, K) (things
first); the saved files carry DATASET category ids (converted with :class:`LabelSpace`).
"""

import json
import logging
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from jsis_d2.data.label_space import LabelSpace
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.evaluation.accumulators.ground_truth import ImageGroundTruth
from jsis_d2.evaluation.pq import (
    PQStats,
    image_pq_stats,
    log_area_mismatches,
    segment_table,
)

__all__ = ["PanopticAccumulator", "PANOPTIC_DIRNAME"]

logger = logging.getLogger(__name__)

PANOPTIC_DIRNAME = "panoptic_predictions"


class PanopticAccumulator:
    """Per-class TP / FP / FN / IoU sums (:class:`PQStats`) over images.

    Args:
        labels: the dataset's label space (K classes, T things).
        label_divisor: for Detectron2-style outputs without segments_info, where the map holds
            ``class * label_divisor + instance`` (-1 = void).
        output_dir: when set, each prediction is written to
            ``output_dir/panoptic_predictions/<name of the GT PNG>.png`` as it is processed, and
            :meth:`results` writes ``output_dir/panoptic_predictions.json`` for all images, so
            ``pq_compute(gt_json, that_json)`` re-evaluates them.
    """

    key = "panoptic_seg"

    def __init__(
        self, labels: LabelSpace, label_divisor: int = 1000, output_dir: Optional[str] = None
    ):
        self._labels = labels
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
            if label < 0:
                continue
            k = label // self._label_divisor
            segments_info.append(
                {"id": label + 1, "category_id": k, "isthing": k < self._labels.num_things}
            )
        return segments_info, pan + 1  # -1 (void) -> 0

    def _save(self, gt: ImageGroundTruth, pan: np.ndarray, segments_info: List[Dict]) -> None:
        folder = os.path.join(self._output_dir, PANOPTIC_DIRNAME)
        os.makedirs(folder, exist_ok=True)
        name = os.path.splitext(os.path.basename(gt.file_name))[0] + ".png"
        write_panoptic_png(os.path.join(folder, name), pan)
        segs = []
        for s in segments_info:
            k = int(s["category_id"])
            d = {
                "id": int(s["id"]),
                "category_id": self._labels.to_dataset_id(k),
                "isthing": int(self._labels.is_thing[k]),
            }
            if "area" in s:
                d["area"] = int(s["area"])
            if "score" in s:
                d["score"] = float(s["score"])
            segs.append(d)
        self._annotations.append(
            {"image_id": gt.image_id, "file_name": name, "segments_info": segs}
        )

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
