"""Does the ROI head name the right class? A confusion matrix over ground-truth boxes.

PQ on things mixes three failures: objects not proposed, masks that are poor, and objects
named wrongly. This diagnostic isolates the last one. It feeds every ground-truth box of a
dataset straight to the box head of a :class:`~jsis_d2.modeling.JSISNet` whose ROI heads are
Detectron2's ``Res5ROIHeads`` (the C4 design), skipping the RPN, and counts the argmax of the
classifier over the T thing classes + background.

Rows: ground-truth thing index t in [0, T). Columns: predicted index in [0, T], where T means
background. Crowd regions are not boxes the ROI head is trained on. The mapper drops them from
``instances``, so they are not counted here either.
"""

from typing import Dict, Iterable, List, Sequence

import numpy as np
import torch

__all__ = ["roi_confusion_matrix", "format_roi_confusion"]


@torch.no_grad()
def roi_confusion_matrix(model, inputs: Iterable[Dict]) -> np.ndarray:
    """Classify ground-truth boxes with the model's ROI box head.

    Args:
        model: a JSISNet with the instance branch on and ``Res5ROIHeads``-style ROI heads
            (``_shared_roi_transform`` + ``box_predictor``). It is put in eval mode.
        inputs: mapper dicts, each with "image" uint8 [3, H', W'] and "instances" whose
            ``gt_boxes`` are in the same H' x W' frame and ``gt_classes`` in [0, T). One image
            per forward pass.

    Returns:
        int64 [T, T + 1]: entry (t, p) counts ground-truth boxes of class t predicted as p
        (p = T is background).

    Raises:
        ValueError: the model has no ROI heads of the C4 kind, or an input has no "instances".
    """
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None or not hasattr(roi_heads, "_shared_roi_transform"):
        raise ValueError(
            "roi_confusion_matrix needs a model with Res5ROIHeads-style ROI heads "
            f"(MODEL.ROI_HEADS.NAME 'Res5ROIHeads'), got {type(roi_heads).__name__}"
        )
    num_things = roi_heads.num_classes
    conf = np.zeros((num_things, num_things + 1), np.int64)
    model.eval()
    for i, x in enumerate(inputs):
        if "instances" not in x:
            raise ValueError(
                f"input {i} ({x.get('file_name', '?')}) has no 'instances': build the inputs "
                "with a training-mode mapper"
            )
        gt = x["instances"].to(model.device)
        if len(gt) == 0:
            continue
        images = model.preprocess_image([x])
        features = model.backbone(images.tensor)
        box_features = roi_heads._shared_roi_transform(
            [features[f] for f in roi_heads.in_features], [gt.gt_boxes]
        )
        logits, _ = roi_heads.box_predictor(box_features.mean(dim=[2, 3]))
        pred = logits.argmax(dim=1).cpu().numpy()
        np.add.at(conf, (gt.gt_classes.cpu().numpy(), pred), 1)
    return conf


def format_roi_confusion(conf: np.ndarray, thing_names: Sequence[str]) -> str:
    """Markdown table of :func:`roi_confusion_matrix` with per-class and overall accuracy."""
    names: List[str] = list(thing_names)
    if conf.shape != (len(names), len(names) + 1):
        raise ValueError(
            f"confusion matrix of shape {conf.shape} does not fit {len(names)} thing names"
        )
    cols = names + ["background"]
    lines = [
        "| ground truth \\ predicted | " + " | ".join(cols) + " | accuracy |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for t, name in enumerate(names):
        total = int(conf[t].sum())
        acc = f"{conf[t, t] / total:.2f}" if total else "-"
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in conf[t]) + f" | {acc} |")
    total = int(conf.sum())
    overall = np.trace(conf[:, : len(names)]) / total if total else float("nan")
    lines.append("")
    lines.append(
        f"{total} ground-truth boxes; right class (argmax over things + background): {overall:.2f}"
    )
    return "\n".join(lines)
