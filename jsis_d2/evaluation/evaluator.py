"""One-pass JSIS-Net evaluation as a Detectron2 ``DatasetEvaluator``.

For each image it reads the ground truth once (:func:`read_ground_truth`) and hands it, with
the matching model output, to one accumulator per output key, each reporting its sections. The
accumulators are built by name from :data:`ACCUMULATOR_REGISTRY`
(:mod:`jsis_d2.evaluation.accumulator_base`; ``TEST.JSIS.ACCUMULATORS``); the built-in ones
(:mod:`jsis_d2.evaluation.builtin_accumulators`):

- ``"panoptic_seg"`` -> ``"panoptic_seg"``: PQ / SQ / RQ for all, things, stuff and per class
  (panopticapi's rules, same core as :func:`pq_compute`), in percent; with ``output_dir`` and
  ``save_panoptic`` the predictions are also saved in COCO panoptic format.
- ``"sem_seg"`` -> ``"sem_seg"``: mIoU, fwIoU, mACC, pACC, per-class IoU over all K classes.
- ``"instances"`` -> ``"segm"`` / ``"bbox"``: COCO AP, AP50, AP75 (pycocotools).
- ``"proposals"`` -> ``"rpn"``: mean recall of the ground-truth thing boxes (paper Table 4).

A section is reported only when its output key was present (a disabled branch gives no key).
Distributed: each process accumulates; ``evaluate()`` gathers the accumulators' states on the
main process, which returns the results; other processes return ``{}``. Id spaces: see
:mod:`jsis_d2.evaluation.accumulators`.
"""

import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from tabulate import tabulate

from jsis_d2.data.label_space import LabelSpace
from jsis_d2.evaluation.accumulator_base import EvalContext, build_accumulators
from jsis_d2.evaluation.accumulators import read_ground_truth
from jsis_d2.evaluation.builtin_accumulators import DEFAULT_ACCUMULATORS
from jsis_d2.evaluation.pq import GROUPS

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

__all__ = ["JSISEvaluator"]

logger = logging.getLogger(__name__)


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
        accumulators: names in :data:`ACCUMULATOR_REGISTRY` of the accumulators to run
            (default: all four built-in ones). An unknown name is a ``ConfigError``.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        rpn_recall_iou: float = 0.5,
        save_panoptic: bool = True,
        crowd_sem_seg: str = "class",
        accumulators: Sequence[str] = DEFAULT_ACCUMULATORS,
    ):
        if crowd_sem_seg not in ("class", "ignore"):
            raise ValueError(f"crowd_sem_seg must be 'class' or 'ignore', got {crowd_sem_seg!r}")
        self._dataset_name = dataset_name
        metadata = MetadataCatalog.get(dataset_name)
        self._labels = LabelSpace.from_metadata(metadata)
        self._context = EvalContext(
            labels=self._labels,
            dataset_name=dataset_name,
            label_divisor=int(getattr(metadata, "label_divisor", 1000)),
            output_dir=output_dir if save_panoptic and output_dir else None,
            rpn_recall_iou=float(rpn_recall_iou),
            crowd_ignore=crowd_sem_seg == "ignore",
            gt_root=getattr(metadata, "panoptic_root", None),
        )
        self._accumulator_names = tuple(accumulators)
        self._distributed = distributed
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
            accumulators=cfg.TEST.JSIS.ACCUMULATORS,
        )

    def reset(self):
        """New, empty accumulators (``TEST.JSIS.ACCUMULATORS``) for the next evaluation."""
        self._accumulators = build_accumulators(self._accumulator_names, self._context)
        self._seen = set()  # output keys processed

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
            gt = read_ground_truth(inp, self._labels.num_classes)
            for acc in self._accumulators:
                if acc.key in out:
                    self._seen.add(acc.key)
                    acc.process(gt, out[acc.key])

    def _state(self) -> Dict:
        """{accumulator name: state} of the accumulators whose output key this process saw
        (every process builds the same names; two accumulators may read one key)."""
        return {
            name: acc.state()
            for name, acc in zip(self._accumulator_names, self._accumulators)
            if acc.key in self._seen
        }

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            states: List[Dict] = comm.gather(self._state(), dst=0)
            if not comm.is_main_process():
                return {}
        else:
            states = [self._state()]
        if not any(states):
            logger.warning("JSISEvaluator on %s: no outputs were processed", self._dataset_name)
            return {}
        results = OrderedDict()
        for name, acc in zip(self._accumulator_names, self._accumulators):
            mine = [s[name] for s in states if name in s]
            if mine:
                results.update(acc.results(mine))
        self._log(results)
        return results

    def _log(self, results: Dict) -> None:
        """One table of PQ / SQ / RQ, one of the headline metrics."""
        tables = []
        if "panoptic_seg" in results:
            r = results["panoptic_seg"]
            rows = [[name] + [r[k + s] for k in ("PQ", "SQ", "RQ", "N")] for name, s, _ in GROUPS]
            tables.append((rows, ["", "PQ", "SQ", "RQ", "#categories"]))
        other = [["mIoU", results["sem_seg"]["mIoU"]]] if "sem_seg" in results else []
        other += [[f"{t} AP50", results[t]["AP50"]] for t in ("segm", "bbox") if t in results]
        if "rpn" in results:
            r = results["rpn"]
            other.append([f"RPN mean recall @IoU{r['iou_threshold']:g}", r["mean_recall"]])
        if other:
            tables.append((other, ["metric", "value"]))
        text = "\n\n".join(
            tabulate(t, headers=h, tablefmt="pipe", floatfmt=".3f") for t, h in tables
        )
        logger.info("JSIS evaluation on %s:\n%s", self._dataset_name, text)
