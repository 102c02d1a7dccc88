"""Panoptic merge of JSIS-Net's semantic and instance outputs (paper section 2.2):
:func:`jsis_panoptic_merge` (the paper's heuristic) and :func:`kirillov_panoptic_merge` (the
Kirillov et al. / PanopticFPN heuristic, Detectron2's own code on our K-class stuff map).

Pure functions of tensors and plain arguments (no model, no catalog); they run on CPU and CUDA
tensors alike and return results on the device of ``sem_seg``.

Shape legend: ``K`` classes (things first, then stuff: the contiguous label space of
:mod:`jsis_d2.data.label_space`), ``N`` predicted instances, ``H x W`` image size.
Every class id here is a CONTIGUOUS index in ``[0, K)``; dataset category ids never appear.
"""

from typing import Dict, List, Sequence, Tuple, Union

import torch

__all__ = ["jsis_panoptic_merge", "kirillov_panoptic_merge", "stuff_map"]


def _check_inputs(sem_seg, instances, is_thing) -> torch.Tensor:
    """Validate merge inputs; return ``is_thing`` as a bool tensor [K] on sem_seg's device."""
    if not isinstance(sem_seg, torch.Tensor) or sem_seg.dim() != 3:
        shape = tuple(sem_seg.shape) if isinstance(sem_seg, torch.Tensor) else type(sem_seg)
        raise ValueError(f"sem_seg must be a float tensor [K, H, W], got {shape}")
    K, H, W = sem_seg.shape
    is_thing = torch.as_tensor(is_thing, device=sem_seg.device)
    if is_thing.dim() != 1 or is_thing.numel() != K:
        raise ValueError(
            f"is_thing has {is_thing.numel()} entries (shape {tuple(is_thing.shape)}) but sem_seg "
            f"has K={K} classes: they must match"
        )
    is_thing = is_thing.bool()
    for name in ("pred_masks", "scores", "pred_classes"):
        if not instances.has(name):
            raise ValueError(f"instances lack the field '{name}' needed by the panoptic merge")
    masks = instances.pred_masks
    n = len(instances)
    if masks.dim() != 3 or masks.shape[0] != n or tuple(masks.shape[1:]) != (H, W):
        raise ValueError(
            f"instances.pred_masks has shape {tuple(masks.shape)}, expected [N={n}, H={H}, W={W}] "
            f"(the sem_seg size): paste the masks at image size first"
        )
    if instances.scores.numel() != n or instances.pred_classes.numel() != n:
        raise ValueError(
            f"instances.scores ({instances.scores.numel()}) / pred_classes "
            f"({instances.pred_classes.numel()}) must have one entry per mask ({n})"
        )
    if n:
        cls = instances.pred_classes.to(sem_seg.device).long()
        out_of_range = (cls < 0) | (cls >= K)
        if bool(out_of_range.any()):
            raise ValueError(
                f"instances.pred_classes contains {cls[out_of_range].unique().tolist()}, outside "
                f"the K={K} classes"
            )
        not_thing = ~is_thing[cls]
        if bool(not_thing.any()):
            raise ValueError(
                f"instances.pred_classes contains {cls[not_thing].unique().tolist()}, which "
                f"is_thing marks as stuff: every predicted instance class must be a thing class"
            )
    return is_thing


def _best_class(sem_seg, class_ids, pixels=None, offset=0) -> torch.Tensor:
    """Flat int64: ``offset`` + the class among ``class_ids`` (int64 [C], increasing, C >= 1)
    with the highest score at each pixel index in ``pixels`` (default: all H * W pixels); ties:
    lower index."""
    first, count = int(class_ids[0]), class_ids.numel()
    contiguous = int(class_ids[-1]) - first + 1 == count
    rows = sem_seg[first : first + count] if contiguous else sem_seg.index_select(0, class_ids)
    rows = rows.flatten(1)  # [C, H * W], a view in the usual things-first layout
    if pixels is not None:
        rows = rows.index_select(1, pixels)
    local = rows.max(dim=0)[1]  # faster than argmax on CPU; also the first maximum on ties
    return local + (first + offset) if contiguous else (class_ids + offset)[local]


def stuff_map(sem_seg: torch.Tensor, is_thing: torch.Tensor) -> torch.Tensor:
    """Most probable STUFF class per pixel (rule 3).

    Args:
        sem_seg: float [K, H, W] class scores. is_thing: bool [K].
    Returns:
        int64 [H, W] contiguous class index of the best stuff class (ties: lower index), or -1
        everywhere when there is no stuff class.
    """
    stuff_ids = torch.nonzero(~is_thing, as_tuple=True)[0]
    H, W = sem_seg.shape[1:]
    if stuff_ids.numel() == 0:
        return torch.full((H, W), -1, dtype=torch.long, device=sem_seg.device)
    return _best_class(sem_seg, stuff_ids).view(H, W)


def _stuff_plus1_uncovered(sem_seg: torch.Tensor, is_thing: torch.Tensor, covered: torch.Tensor):
    """Flat int64 [H * W]: 1 + the best stuff class (rule 3) at the pixels not ``covered``
    (bool [H * W]), 0 at covered pixels (and everywhere when there is no stuff class). Gathers
    only the uncovered pixels' scores when they are a minority of the image."""
    P = covered.numel()
    stuff_ids = torch.nonzero(~is_thing, as_tuple=True)[0]
    if stuff_ids.numel() == 0:
        return torch.zeros(P, dtype=torch.long, device=sem_seg.device)
    idx = torch.nonzero(~covered, as_tuple=True)[0]
    if 2 * idx.numel() >= P:  # dense: one reduction over the image
        return _best_class(sem_seg, stuff_ids, offset=1).masked_fill_(covered, 0)
    out = torch.zeros(P, dtype=torch.long, device=sem_seg.device)
    if idx.numel():
        out[idx] = _best_class(sem_seg, stuff_ids, idx, offset=1)
    return out


def _running_max(probs: torch.Tensor, order: torch.Tensor):
    """Max over ``probs[order]`` [n, H, W] without copying it: (best [H, W], position in
    ``order`` of the first maximum) -- O(n) in-place tensor ops."""
    order_l = order.tolist()
    best = probs[order_l[0]].clone()
    winner = torch.zeros(best.shape, dtype=torch.long, device=best.device)
    better = torch.empty(best.shape, dtype=torch.bool, device=best.device)
    for pos in range(1, len(order_l)):
        p = probs[order_l[pos]]
        torch.gt(p, best, out=better)  # strict: an earlier (higher-ranked) instance keeps ties
        torch.maximum(best, p, out=best)
        winner.masked_fill_(better, pos)
    return best, winner


def jsis_panoptic_merge(
    sem_seg: torch.Tensor,
    instances,
    is_thing: Union[torch.Tensor, Sequence[bool]],
    *,
    stuff_area_thresh: int = 4096,
    instance_score_thresh: float = 0.5,
    mask_threshold: float = 0.5,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Merge semantic and instance predictions into a panoptic segmentation (paper 2.2).

    Args:
        sem_seg: float [K, H, W] per-class scores (logits or probabilities: only their order per
            pixel matters), contiguous class index k on dim 0.
        instances: Detectron2 ``Instances`` of size (H, W) with ``pred_masks`` float [N, H, W]
            mask probabilities in [0, 1] (pasted at image size, not thresholded; bool masks are
            accepted and read as probabilities 0/1), ``scores`` float [N], ``pred_classes``
            int [N] (contiguous indices, each a thing class).
        is_thing: bool [K] (tensor or sequence): which classes are things.
        stuff_area_thresh: stuff classes covering fewer pixels than this (after instances are
            pasted) are replaced by the best stuff class at or above it, or by void.
        instance_score_thresh: instances with ``score < instance_score_thresh`` are dropped.
        mask_threshold: instance i covers pixel p when ``pred_masks[i, p] >= mask_threshold``.

    Rules, in order: (1) score threshold; (2) a pixel covered by several instances goes to the
    highest mask probability there (ties: higher score, then lower index), an instance left
    without pixels gets no segment; (3) stuff map = best stuff class per pixel; (4) instances
    over stuff; (5) stuff classes whose remaining area is below ``stuff_area_thresh`` are
    removed, their pixels take the best-scoring stuff class among those at or above it (void
    when none); (6) unique ids.

    Returns:
        panoptic_seg: int32 [H, W] on sem_seg's device; 0 = void, else a segment id.
        segments_info: list of dicts ``{"id", "category_id" (contiguous), "isthing", "area"}``
            plus ``"score"`` and ``"instance_id"`` (index into ``instances``) for things.
            Ids: kept instances first, by decreasing score (ties: lower index), numbered
            1, 2, ...; then stuff classes by increasing class index.

    Raises:
        ValueError: ``is_thing`` length != K, masks not [N, H, W], a class outside [0, K) or
            a class that is not a thing.
    """
    is_thing = _check_inputs(sem_seg, instances, is_thing)
    device = sem_seg.device
    K, H, W = sem_seg.shape

    # (1) score threshold, then order by decreasing score (stable: ties keep lower index first)
    scores = instances.scores.to(device)
    kept = torch.nonzero(scores >= instance_score_thresh, as_tuple=True)[0]
    order = kept[torch.sort(scores[kept], descending=True, stable=True)[1]]
    n = order.numel()

    # (2) per-pixel winner: the highest probability over the kept instances taken in score
    # order, the FIRST maximum winning ties (= higher score, then lower index); the pixel is
    # covered when that maximum reaches mask_threshold (every tied instance covers it too).
    if n:
        probs = instances.pred_masks.to(device)
        if not probs.dtype.is_floating_point:
            probs = probs.float()
        if n == probs.shape[0] and bool((order == torch.arange(n, device=device)).all()):
            # already in score order (Detectron2's detector output is): one reduction, no copy
            best, winner = probs.max(dim=0)  # max(dim) returns the first maximum on ties
        else:
            best, winner = _running_max(probs, order)
        covered = best >= mask_threshold
        del best
    else:
        winner = torch.zeros((H, W), dtype=torch.long, device=device)
        covered = torch.zeros((H, W), dtype=torch.bool, device=device)

    # Flat maps over the P = H * W pixels from here on.
    covered, winner = covered.flatten(), winner.flatten()
    # (3) stuff map, (4) instances over stuff: s1 = 1 + stuff class at the uncovered pixels,
    # 0 at covered pixels (and void)
    s1 = _stuff_plus1_uncovered(sem_seg, is_thing, covered)
    # (5) stuff area threshold among the remaining pixels; bin 0 (not stuff) is never "small"
    area1 = torch.bincount(s1, minlength=K + 1)
    keep1 = (area1 >= stuff_area_thresh) & (area1 > 0)
    keep1[0] = True
    small_idx = torch.nonzero(~keep1[s1], as_tuple=True)[0]
    if small_idx.numel():
        big_ids = torch.nonzero(keep1[1:], as_tuple=True)[0]
        if big_ids.numel():
            # best big stuff class, evaluated at the small-class pixels only
            s1.index_copy_(0, small_idx, _best_class(sem_seg, big_ids, small_idx, offset=1))
        else:
            s1.index_fill_(0, small_idx, 0)  # nothing to fall back to: void

    # (6) ids. Slots: 0 = void, 1 + k = stuff class k, K + 1 + s = instance order[s].
    slot = torch.where(covered, winner + (K + 1), s1)
    seg_area = torch.bincount(slot, minlength=K + 1 + n)
    present = seg_area > 0
    present[0] = False
    p_stuff, p_inst = present[1 : K + 1].int(), present[K + 1 :].int()
    n_inst = int(p_inst.sum())
    ids = torch.cat(  # instances first (score order), then stuff (class order); 0 if absent
        [
            p_inst.new_zeros(1),
            (torch.cumsum(p_stuff, 0, dtype=torch.int32) + n_inst) * p_stuff,
            torch.cumsum(p_inst, 0, dtype=torch.int32) * p_inst,
        ]
    )
    panoptic_seg = ids[slot].view(H, W)

    # segments_info (one transfer to host), in id order
    seg_area_l = seg_area.cpu().tolist()
    present_l = present.cpu().tolist()
    order_l = order.cpu().tolist()
    cls_l = instances.pred_classes.cpu().tolist() if n else []
    score_l = instances.scores.cpu().tolist() if n else []
    segments_info = []
    for pos in range(n):
        if present_l[K + 1 + pos]:
            i = order_l[pos]
            segments_info.append(
                {
                    "id": len(segments_info) + 1,
                    "category_id": int(cls_l[i]),
                    "isthing": True,
                    "area": int(seg_area_l[K + 1 + pos]),
                    "score": float(score_l[i]),
                    "instance_id": int(i),
                }
            )
    for k in range(K):
        if present_l[1 + k]:
            segments_info.append(
                {
                    "id": len(segments_info) + 1,
                    "category_id": k,
                    "isthing": False,
                    "area": int(seg_area_l[1 + k]),
                }
            )
    return panoptic_seg, segments_info


def kirillov_panoptic_merge(
    sem_seg: torch.Tensor,
    instances,
    is_thing: Union[torch.Tensor, Sequence[bool]],
    *,
    overlap_thresh: float = 0.5,
    stuff_area_thresh: int = 4096,
    instance_score_thresh: float = 0.5,
    mask_threshold: float = 0.5,
) -> Tuple[torch.Tensor, List[Dict]]:
    """The Kirillov et al. / PanopticFPN merge, on our K-class semantic output.

    Detectron2's :func:`combine_semantic_and_instance_outputs` does the work: instances with
    ``score >= instance_score_thresh`` are pasted in decreasing score order (mask =
    ``pred_masks >= mask_threshold``); an instance whose already-taken part exceeds
    ``overlap_thresh`` of its mask is dropped, otherwise it takes its free pixels. The free
    pixels then take the stuff map (best stuff class per pixel, as in :func:`stuff_map`); a stuff
    class covering fewer than ``stuff_area_thresh`` free pixels is dropped and its pixels stay
    void (unlike the JSIS rule 5).

    Args, returns and raises: as :func:`jsis_panoptic_merge` (the same output format);
    ``pred_masks`` may be float probabilities or bool.
    """
    from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from detectron2.structures import Instances

    is_thing = _check_inputs(sem_seg, instances, is_thing)
    device = sem_seg.device
    masks = instances.pred_masks.to(device)
    if masks.dtype != torch.bool:
        masks = masks >= mask_threshold
    inst = Instances(
        tuple(sem_seg.shape[1:]),
        pred_masks=masks,
        scores=instances.scores.to(device),
        pred_classes=instances.pred_classes.to(device),
    )
    # Detectron2 reserves label 0 for "things": shift our stuff labels by one so that any
    # contiguous index (even 0, when there are no things) is kept, and mark void as 0.
    semantic = stuff_map(sem_seg, is_thing) + 1
    panoptic_seg, segments_info = combine_semantic_and_instance_outputs(
        inst, semantic, overlap_thresh, stuff_area_thresh, instance_score_thresh
    )
    # Detectron2 gives things no area; a stuff segment's area is its pixel count, too.
    areas = torch.bincount(panoptic_seg.flatten().long(), minlength=len(segments_info) + 1)
    areas = areas.cpu().tolist()
    out = [
        dict(s, category_id=int(s["category_id"]) - (0 if s["isthing"] else 1), area=areas[s["id"]])
        for s in segments_info
    ]
    return panoptic_seg.to(torch.int32), out
