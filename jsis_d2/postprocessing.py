"""Panoptic merge of JSIS-Net's semantic and instance outputs (paper section 2.2):
:func:`jsis_panoptic_merge` (the paper's heuristic) and :func:`kirillov_panoptic_merge` (the
Kirillov et al. / PanopticFPN heuristic, Detectron2's own code on our K-class stuff map).

Pure functions of tensors and plain arguments (no model, no catalog); they run on CPU and CUDA
tensors alike and return results on the device of ``sem_seg``.

Shape legend: ``K`` classes (things first, then stuff: the contiguous label space of
:mod:`jsis_d2.data.label_space`), ``N`` predicted instances, ``H x W`` image size.
Every class id here is a CONTIGUOUS index in ``[0, K)``; dataset category ids never appear.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "jsis_merge_core",
    "jsis_panoptic_merge",
    "kirillov_panoptic_merge",
    "merge_order",
    "stuff_map",
]


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


def stuff_map(sem_seg: torch.Tensor, is_thing: torch.Tensor) -> torch.Tensor:
    """Most probable STUFF class per pixel (rule 3).

    Args:
        sem_seg: float [K, H, W] class scores. is_thing: bool [K].
    Returns:
        int64 [H, W] contiguous class index of the best stuff class (ties: lower index), or -1
        everywhere when there is no stuff class.
    """
    stuff_classes = [k for k, t in enumerate(is_thing.tolist()) if not t]
    H, W = sem_seg.shape[1:]
    if not stuff_classes:
        return torch.full((H, W), -1, dtype=torch.long, device=sem_seg.device)
    local = _class_rows(sem_seg, stuff_classes).max(dim=0)[1]  # the first maximum on ties
    return torch.tensor(stuff_classes, device=sem_seg.device)[local].view(H, W)


def merge_order(scores: torch.Tensor, instance_score_thresh: float) -> torch.Tensor:
    """Rule 1 and the instance order of the merge, tensor-only (traceable, exportable).

    Args:
        scores: float [N] instance scores.
    Returns:
        int64 [n]: the indices of the instances with ``score >= instance_score_thresh``, by
        decreasing score, ties: lower index first. Ranks come from pairwise comparisons (O(N^2)
        booleans, N is at most a few hundred detections), not from a stable sort.
    """
    kept = torch.nonzero(scores >= instance_score_thresh).flatten()
    s = scores.index_select(0, kept)
    ahead = (s[None, :] > s[:, None]) | (
        (s[None, :] == s[:, None]) & (kept[None, :] < kept[:, None])
    )
    rank = ahead.sum(dim=1)  # a permutation of 0..n-1
    return torch.zeros_like(kept).scatter(0, rank, kept)


def jsis_merge_core(
    sem_seg: torch.Tensor,
    probs: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    stuff_classes: Sequence[int],
    *,
    stuff_area_thresh: int,
    mask_threshold: float,
    uncovered_only: Optional[bool] = False,
):
    """Rules 2-6 of the JSIS merge on tensors only: the one merge that the eager model
    (through :func:`jsis_panoptic_merge`) and the exported graph (:mod:`jsis_d2.export`) run.

    No Python branch on tensor values (but for ``uncovered_only=None``, which eager callers
    may pass), no ``.tolist()``, no ``bincount``, no stable sort and no ``out=``: it traces into
    a graph that is valid for every input (any number of instances, zero included). Inputs are
    not validated here (:func:`jsis_panoptic_merge` does it).

    Args:
        sem_seg: float [K, H, W] finite class scores, contiguous class index k on dim 0.
        probs: float [R, H, W] mask probabilities in [0, 1]: rows [0, n) are the n kept
            instances in merge order (:func:`merge_order`); rows [n, R) are "no instance" rows
            with values <= every probability and < ``mask_threshold`` (e.g. zeros when
            mask_threshold > 0): they never win a pixel that an instance covers, and the
            per-pixel maximum exists without a branch on n == 0 (R >= max(n, 1)).
        scores: float [n] the kept instances' scores, in merge order.
        classes: int64 [n] their contiguous (thing) classes.
        stuff_classes: the stuff class indices, increasing (plain Python ints: a property of the
            label space, not of the data).
        stuff_area_thresh, mask_threshold: as :func:`jsis_panoptic_merge`.
        uncovered_only: how the stuff map is computed, same result either way: False, one
            reduction over all pixels; True, over the uncovered pixels only (faster when
            instances cover most of the image); None, chosen from the coverage (a Python branch
            on data: eager only, not for tracing).
    Returns:
        panoptic_seg: int32 [H, W], 0 = void, else a segment id in [1, S].
        segments: int64 [S, 4] rows (id, category k, isthing 0/1, area in pixels), in id order:
            instances first (merge order), then stuff classes by increasing k; ids 1..S.
        segment_scores: float [S] the instance score for things, 1.0 for stuff.
        segment_rows: int64 [S] the instance's row in [0, n) for things, -1 for stuff.
    """
    K, H, W = sem_seg.shape
    one = torch.ones_like(classes)  # [n]: counts n without reading it as a Python int

    # (2) per-pixel winner: the first maximum over the rows (= higher score, then lower index,
    # as the rows are in merge order); covered when it reaches mask_threshold (never in a
    # "no instance" row: it wins only where every instance is below the threshold).
    best, pos = probs.max(dim=0)
    pos = pos.flatten()
    covered = best.flatten() >= mask_threshold
    if uncovered_only is None:
        uncovered_only = 2 * int(covered.sum()) > covered.numel()

    # (3) stuff map, (4) instances over stuff: s1 = 1 + stuff class at uncovered pixels, else 0
    if stuff_classes:
        rows = _class_rows(sem_seg, stuff_classes)  # [S, H * W]
        stuff1 = torch.tensor(list(stuff_classes), device=sem_seg.device) + 1  # [S]
        if uncovered_only:  # gather the uncovered pixels' scores (cheaper when they are few)
            free = torch.nonzero(~covered).flatten()  # [u] pixel indices
            best_stuff = _plus(rows.index_select(1, free).max(dim=0)[1], stuff_classes, stuff1)
            s1 = torch.zeros_like(pos).scatter_(0, free, best_stuff)
        else:  # one reduction over the image
            s1 = _plus(rows.max(dim=0)[1], stuff_classes, stuff1).masked_fill_(covered, 0)
    else:
        s1 = torch.zeros_like(pos)

    # (5) stuff area threshold among the remaining pixels; bin 0 (not stuff) is never "small"
    area1 = torch.zeros(K + 1, dtype=torch.long, device=sem_seg.device)
    area1 = area1.scatter_add(0, s1, area1.new_ones(1).expand_as(s1))
    bins = torch.arange(K + 1, device=sem_seg.device)
    keep1 = ((area1 >= stuff_area_thresh) & (area1 > 0)) | (bins == 0)
    if stuff_classes:
        small = torch.nonzero(~keep1[s1]).flatten()  # [m] pixel indices
        big = keep1.index_select(0, stuff1)  # [S] stuff classes at or above the threshold
        # best big stuff class at the small-class pixels, gathered as [B + 1, m] scores: the B
        # big classes' rows, then a copy of the first big row (or of any row when B == 0, the
        # result is void then) so that the maximum never runs over an empty dimension
        cand = torch.cat([torch.nonzero(big).flatten(), big.int().argmax().reshape(1)])
        vals = rows.reshape(-1)[cand[:, None] * rows.shape[1] + small[None, :]]
        fallback = stuff1[cand[vals.max(dim=0)[1]]] * big.any()
        s1.scatter_(0, small, fallback)

    # (6) ids. Slots: 0 = void, 1 + k = stuff class k, K + 1 + r = instance row r.
    slot = torch.where(covered, pos + (K + 1), s1)
    seg_area = torch.cat([area1.new_zeros(K + 1), torch.zeros_like(classes)])
    seg_area = seg_area.scatter_add(0, slot, area1.new_ones(1).expand_as(slot))
    present = seg_area > 0
    p_stuff, p_inst = present[1 : K + 1].long(), present[K + 1 :].long()
    ids_inst = torch.cumsum(p_inst, 0) * p_inst
    ids_stuff = (torch.cumsum(p_stuff, 0) + p_inst.sum()) * p_stuff
    ids = torch.cat([area1.new_zeros(1), ids_stuff, ids_inst]).to(torch.int32)
    panoptic_seg = ids[slot].view(H, W)

    # segment table: instance rows then stuff rows, the absent ones dropped
    sel = torch.nonzero(torch.cat([p_inst, p_stuff])).flatten()
    table = torch.stack(
        [
            torch.cat([ids_inst, ids_stuff]),
            torch.cat([classes.long(), bins[:K]]),
            torch.cat([one.long(), torch.zeros_like(bins[:K])]),
            torch.cat([seg_area[K + 1 :], seg_area[1 : K + 1]]),
            torch.cat([torch.cumsum(one.long(), 0) - 1, torch.full_like(bins[:K], -1)]),
        ],
        dim=1,
    ).index_select(0, sel)
    segment_scores = torch.cat([scores.float(), sem_seg.new_ones(K, dtype=torch.float32)])
    return panoptic_seg, table[:, :4], segment_scores.index_select(0, sel), table[:, 4]


def _plus(local: torch.Tensor, class_ids: Sequence[int], class_ids1: torch.Tensor):
    """``class_ids1[local]`` (1 + the class id of each local index): an addition when the
    classes are contiguous (Python-level, a property of the label space)."""
    if class_ids[-1] - class_ids[0] + 1 == len(class_ids):
        return local + (class_ids[0] + 1)
    return class_ids1[local]


def _class_rows(sem_seg: torch.Tensor, class_ids: Sequence[int]) -> torch.Tensor:
    """[C, H * W] scores of the classes ``class_ids`` (increasing Python ints): a view when
    they are contiguous (the things-first label space), else a copy."""
    first, count = class_ids[0], len(class_ids)
    if class_ids[-1] - first + 1 == count:
        return sem_seg[first : first + count].flatten(1)
    index = torch.tensor(list(class_ids), device=sem_seg.device)
    return sem_seg.index_select(0, index).flatten(1)


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
    when none); (6) unique ids. The work is done by :func:`merge_order` and
    :func:`jsis_merge_core` (tensor-only, also in the exported graph); this function validates
    the inputs and turns the segment table into dicts.

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
    stuff_classes = [k for k, t in enumerate(is_thing.tolist()) if not t]

    scores = instances.scores.to(device)
    order = merge_order(scores, instance_score_thresh)
    n = order.numel()
    probs = instances.pred_masks.to(device)
    if not probs.dtype.is_floating_point:
        probs = probs.float()
    # The core's rows in merge order, without copying the maps in the usual case (Detectron2's
    # detector output is score-sorted: the kept instances are a prefix), and one "no instance"
    # row when no instance is kept.
    if n == 0:
        probs = probs.new_full((1, H, W), float("-inf"))  # the core's "no instance" row
    elif not bool((order == torch.arange(n, device=device)).all()):
        probs = probs.index_select(0, order)
    elif n < probs.shape[0]:
        probs = probs[:n]
    pan, table, seg_scores, rows = jsis_merge_core(
        sem_seg,
        probs,
        scores.index_select(0, order),
        instances.pred_classes.to(device).long().index_select(0, order),
        stuff_classes,
        stuff_area_thresh=stuff_area_thresh,
        mask_threshold=mask_threshold,
        uncovered_only=None,
    )

    # segments_info (one transfer to host), in id order
    table_l = table.cpu().tolist()
    scores_l = seg_scores.cpu().tolist()
    inst_l = order.index_select(0, rows.clamp(min=0)).cpu().tolist() if n else []
    segments_info = []
    for j, (sid, k, isthing, area) in enumerate(table_l):
        s = {"id": sid, "category_id": k, "isthing": bool(isthing), "area": area}
        if isthing:
            s.update(score=float(scores_l[j]), instance_id=int(inst_l[j]))
        segments_info.append(s)
    return pan, segments_info


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
