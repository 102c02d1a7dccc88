"""Panoptic merges: each JSIS rule on a hand-built case, the edges, bad input, and a pixel-by-
pixel reference implementation on random inputs. Classes: K = 5, things 0, 1; stuff 2, 3, 4."""

import random

import pytest
import torch

from jsis_d2.postprocessing import jsis_panoptic_merge, kirillov_panoptic_merge, stuff_map

from detectron2.structures import Instances

IS_THING = [True, True, False, False, False]
H, W = 6, 8


def sem(best, second=None, K=5, h=H, w=W):
    """sem_seg [K, h, w] where class best[y][x] scores 2 and second[y][x] (if given) scores 1."""
    s = torch.zeros(K, h, w)
    best = torch.as_tensor(best).expand(h, w)
    s.scatter_(0, best[None], 2.0)
    if second is not None:
        second = torch.as_tensor(second).expand(h, w)
        s.scatter_(0, second[None], 1.0)
    return s


def insts(masks, scores, classes, h=H, w=W):
    if isinstance(masks, (list, tuple)):
        masks = torch.stack(list(masks)) if len(masks) else torch.zeros(0, h, w)
    masks = masks.float().reshape(len(masks), h, w)
    return Instances(
        (h, w),
        pred_masks=masks,
        scores=torch.as_tensor(scores, dtype=torch.float32).reshape(-1),
        pred_classes=torch.as_tensor(classes, dtype=torch.long).reshape(-1),
    )


def box(p, y0, y1, x0, x1, h=H, w=W):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = p
    return m


def merge(s, i, **kw):
    kw.setdefault("stuff_area_thresh", 0)
    return jsis_panoptic_merge(s, i, IS_THING, **kw)


def labels(pan, info):
    """[H, W] category per pixel (-1 void) and [H, W] segment index tensor, from the output."""
    cat = torch.full(pan.shape, -1, dtype=torch.long)
    for s in info:
        cat[pan == s["id"]] = s["category_id"]
    return cat


def check_consistent(pan, info):
    assert pan.dtype == torch.int32
    ids = [s["id"] for s in info]
    assert len(set(ids)) == len(ids) and all(i > 0 for i in ids)
    assert set(torch.unique(pan).tolist()) - {0} == set(ids)
    for s in info:
        assert s["area"] == int((pan == s["id"]).sum()) > 0
        assert ("score" in s) == s["isthing"]


# ------------------------------------------------------------------ rule 1: thresholds
def test_score_threshold_drops_instance_and_mask_threshold_is_inclusive():
    s = sem(2)
    m0 = box(0.5, 0, 2, 0, 2)  # exactly at mask_threshold: covers
    m0[0, 0] = 0.49  # just below: not covered
    m1 = box(0.9, 3, 5, 3, 5)
    pan, info = merge(s, insts([m0, m1], [0.5, 0.49], [0, 1]))
    check_consistent(pan, info)
    things = [x for x in info if x["isthing"]]
    assert len(things) == 1 and things[0]["category_id"] == 0 and things[0]["area"] == 3
    assert things[0]["score"] == pytest.approx(0.5) and things[0]["instance_id"] == 0
    cat = labels(pan, info)
    assert cat[0, 0] == 2 and cat[0, 1] == 0 and cat[3, 3] == 2  # dropped instance -> stuff


# ------------------------------------------------------------------ rule 2: overlaps
def test_overlap_goes_to_highest_probability_per_pixel_not_score():
    s = sem(3)
    a = box(0.6, 0, 4, 0, 4)  # higher score, lower probability on the overlap
    b = box(0.9, 2, 6, 2, 6)
    pan, info = merge(s, insts([a, b], [0.95, 0.7], [0, 1]))
    check_consistent(pan, info)
    cat = labels(pan, info)
    assert (cat[2:6, 2:6] == 1).all()  # overlap [2:4, 2:4] taken by b (0.9 > 0.6)
    assert cat[0, 0] == 0 and cat[3, 1] == 0
    areas = {x["category_id"]: x["area"] for x in info if x["isthing"]}
    assert areas == {0: 16 - 4, 1: 16}  # no NMS: both instances survive
    # per-pixel: where a is more confident it wins even against the higher-prob-elsewhere b
    a2 = a.clone()
    a2[3, 3] = 0.95
    pan, info = merge(s, insts([a2, b], [0.95, 0.7], [0, 1]))
    assert labels(pan, info)[3, 3] == 0 and labels(pan, info)[2, 2] == 1


def test_tie_break_higher_score_then_lower_index():
    s = sem(2)
    a = box(0.8, 0, 3, 0, 3)
    b = box(0.8, 0, 3, 0, 3)
    c = box(0.8, 0, 3, 0, 3)
    # equal probabilities: higher score wins, whatever the order
    pan, info = merge(s, insts([a, b], [0.6, 0.9], [0, 1]))
    assert [x["category_id"] for x in info if x["isthing"]] == [1]
    pan, info = merge(s, insts([b, a], [0.9, 0.6], [1, 0]))
    assert [x["category_id"] for x in info if x["isthing"]] == [1]
    # equal probabilities and scores: lower index wins
    pan, info = merge(s, insts([a, b, c], [0.7, 0.7, 0.7], [1, 0, 0]))
    things = [x for x in info if x["isthing"]]
    assert [(x["category_id"], x["instance_id"]) for x in things] == [(1, 0)]


def test_instance_fully_covered_gets_no_segment_and_ids_stay_unique():
    s = sem(4)
    big = box(0.9, 0, 6, 0, 6)
    inner = box(0.7, 1, 3, 1, 3)  # inside big, lower probability everywhere
    other = box(0.8, 0, 6, 6, 8)
    pan, info = merge(s, insts([big, inner, other], [0.6, 0.99, 0.7], [0, 1, 1]))
    check_consistent(pan, info)
    things = [x for x in info if x["isthing"]]
    assert sorted(x["instance_id"] for x in things) == [0, 2]
    assert [x["id"] for x in info] == list(range(1, len(info) + 1))
    # segments numbered: instances by decreasing score, then stuff
    assert [x["instance_id"] for x in things] == [2, 0]


# ------------------------------------------------------------------ rules 3-4: stuff map
def test_thing_classes_in_semantic_map_become_best_stuff_class():
    best = torch.full((H, W), 2)
    best[:, :4] = 0  # semantic says "thing 0" on the left half, no instance there
    second = torch.full((H, W), 3)
    second[:, 4:] = 4
    s = sem(best, second)
    pan, info = merge(s, insts([], [], []))
    check_consistent(pan, info)
    cat = labels(pan, info)
    assert (cat[:, :4] == 3).all() and (cat[:, 4:] == 2).all()
    assert all(not x["isthing"] for x in info)
    assert torch.equal(stuff_map(s, torch.tensor(IS_THING)), cat)


def test_instances_take_priority_over_stuff():
    s = sem(3)
    pan, info = merge(s, insts([box(0.9, 1, 3, 1, 3)], [0.9], [1]))
    check_consistent(pan, info)
    cat = labels(pan, info)
    assert (cat[1:3, 1:3] == 1).all() and int((cat == 3).sum()) == H * W - 4


# ------------------------------------------------------------------ rule 5: stuff areas
def test_small_stuff_takes_best_stuff_class_above_threshold_per_pixel():
    best = torch.full((H, W), 2)  # class 2: 36 px
    best[:, 6:] = 3  # class 3: 12 px
    best[0, 0:2] = 4  # class 4: 2 px (small)
    best[5, 0] = 4  # class 4: 1 more px
    second = torch.full((H, W), 3)
    second[:, 6:] = 2
    second[5, 0] = 2  # at this pixel, class 2 is the best big class
    s = sem(best, second)
    s[3, 0, 0:2] = 1.5  # at row 0 the best big class is 3 (1.5 > 0 for class 2)
    pan, info = merge(s, insts([], [], []), stuff_area_thresh=10)
    check_consistent(pan, info)
    cat = labels(pan, info)
    assert cat[0, 0] == 3 and cat[0, 1] == 3 and cat[5, 0] == 2
    assert sorted(x["category_id"] for x in info) == [2, 3]
    # the area is counted on the pixels left after the instances: covering class 3 makes it small
    inst = insts([box(0.9, 0, 6, 6, 8)], [0.9], [0])
    s2 = sem(best)
    pan, info = merge(s2, inst, stuff_area_thresh=10)
    cat = labels(pan, info)
    assert {x["category_id"] for x in info} == {0, 2}
    assert (cat[0, 0:2] == 2).all()


def test_no_stuff_class_above_threshold_gives_void():
    best = torch.full((H, W), 2)
    best[:, 4:] = 3
    pan, info = merge(sem(best), insts([box(0.9, 0, 2, 0, 2)], [0.9], [0]), stuff_area_thresh=100)
    check_consistent(pan, info)
    assert len(info) == 1 and info[0]["isthing"] and info[0]["id"] == 1
    assert int((pan == 0).sum()) == H * W - 4


# ------------------------------------------------------------------ edges
def test_no_instances_and_all_below_threshold_give_stuff_only():
    s = sem(2)
    for inst in (insts([], [], []), insts([box(0.9, 0, 3, 0, 3)] * 2, [0.1, 0.2], [0, 1])):
        pan, info = merge(s, inst)
        check_consistent(pan, info)
        assert info == [{"id": 1, "category_id": 2, "isthing": False, "area": H * W}]
        assert (pan == 1).all()


def test_empty_image():
    s = torch.zeros(5, 0, 0)
    pan, info = jsis_panoptic_merge(s, insts([], [], [], h=0, w=0), IS_THING)
    assert pan.shape == (0, 0) and pan.dtype == torch.int32 and info == []
    pan, info = kirillov_panoptic_merge(s, insts([], [], [], h=0, w=0), IS_THING)
    assert pan.shape == (0, 0) and info == []


def test_no_stuff_classes_at_all_leaves_uncovered_pixels_void():
    s = torch.zeros(2, H, W)
    pan, info = jsis_panoptic_merge(
        s, insts([box(0.9, 0, 2, 0, 2)], [0.9], [1]), [True, True], stuff_area_thresh=0
    )
    check_consistent(pan, info)
    assert len(info) == 1 and int((pan == 0).sum()) == H * W - 4


def test_bool_masks_and_tensor_is_thing_accepted():
    s = sem(2)
    i = insts([box(1.0, 0, 2, 0, 2)], [0.9], [0])
    i.pred_masks = i.pred_masks.bool()
    pan, info = jsis_panoptic_merge(s, i, torch.tensor(IS_THING), stuff_area_thresh=0)
    assert [x["area"] for x in info] == [4, H * W - 4]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("fn", [jsis_panoptic_merge, kirillov_panoptic_merge])
def test_bad_inputs_raise_naming_the_problem(fn):
    s = sem(2)
    good = insts([box(0.9, 0, 2, 0, 2)], [0.9], [0])
    with pytest.raises(ValueError, match="is_thing has 4 entries"):
        fn(s, good, IS_THING[:4])
    with pytest.raises(ValueError, match=r"pred_masks has shape \(1, 5, 8\)"):
        fn(s, insts(torch.zeros(1, 5, 8), [0.9], [0], h=5, w=8), IS_THING)
    with pytest.raises(ValueError, match=r"pred_classes contains \[3\].*stuff"):
        fn(s, insts([box(0.9, 0, 2, 0, 2)], [0.9], [3]), IS_THING)
    with pytest.raises(ValueError, match=r"pred_classes contains \[7\], outside"):
        fn(s, insts([box(0.9, 0, 2, 0, 2)], [0.9], [7]), IS_THING)
    with pytest.raises(ValueError, match=r"sem_seg must be a float tensor \[K, H, W\]"):
        fn(s[0], good, IS_THING)
    no_scores = Instances((H, W), pred_masks=torch.zeros(1, H, W), pred_classes=torch.tensor([0]))
    with pytest.raises(ValueError, match="lack the field 'scores'"):
        fn(s, no_scores, IS_THING)


# ------------------------------------------------------------------ reference implementation
def reference_merge(s, masks, scores, classes, is_thing, area_thr, score_thr, mask_thr):
    """Pixel-by-pixel Python version of DESIGN.md rules 1-6 -> [H, W] of (category, inst) pairs
    with inst = instance index for things, None for stuff, and None category for void."""
    K, h, w = len(s), len(s[0]), len(s[0][0])
    kept = [i for i in range(len(scores)) if scores[i] >= score_thr]
    stuff = [k for k in range(K) if not is_thing[k]]
    out = [[None] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            cands = [i for i in kept if masks[i][y][x] >= mask_thr]
            if cands:
                i = sorted(cands, key=lambda i: (-masks[i][y][x], -scores[i], i))[0]
                out[y][x] = (classes[i], i)
            elif stuff:
                out[y][x] = (max(stuff, key=lambda k: (s[k][y][x], -k)), None)
    area = {}
    for row in out:
        for v in row:
            if v is not None and v[1] is None:
                area[v[0]] = area.get(v[0], 0) + 1
    big = [k for k, a in area.items() if a >= area_thr]
    for y in range(h):
        for x in range(w):
            v = out[y][x]
            if v is not None and v[1] is None and v[0] not in big:
                out[y][x] = (max(big, key=lambda k: (s[k][y][x], -k)), None) if big else None
    return out


@pytest.mark.parametrize("seed", range(8))
def test_matches_pixelwise_reference_on_random_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    K, h, w, n = 6, 9, 11, rng.randint(0, 6)
    # things first (the label space) and, for some seeds, an interleaved layout
    is_thing = [True, True, True, False, False, False]
    if seed % 4 >= 2:
        is_thing = [False, True, False, True, True, False]
    thing_ids = torch.tensor([k for k in range(K) if is_thing[k]])
    # quantized values make ties frequent (exercises the tie-break rules)
    s = torch.randint(0, 4, (K, h, w), generator=g).float()
    masks = torch.randint(0, 5, (n, h, w), generator=g).float() / 4
    scores = torch.randint(1, 5, (n,), generator=g).float() / 4
    if seed % 2:  # detector-like score order: the no-copy max path; else the running max
        scores = scores.sort(descending=True)[0]
    classes = thing_ids[torch.randint(0, 3, (n,), generator=g)]
    area_thr = rng.choice([0, 10, 25, 200])
    pan, info = jsis_panoptic_merge(
        s,
        insts(masks, scores, classes, h, w),
        is_thing,
        stuff_area_thresh=area_thr,
        instance_score_thresh=0.5,
        mask_threshold=0.5,
    )
    check_consistent(pan, info)
    ref = reference_merge(
        s.tolist(), masks.tolist(), scores.tolist(), classes.tolist(), is_thing, area_thr, 0.5, 0.5
    )
    by_id = {x["id"]: x for x in info}
    for y in range(h):
        for x in range(w):
            sid = int(pan[y, x])
            got = None if sid == 0 else (by_id[sid]["category_id"], by_id[sid].get("instance_id"))
            assert got == ref[y][x], (y, x)


# ------------------------------------------------------------------ kirillov alternative
def test_kirillov_score_order_overlap_threshold_and_small_stuff_void():
    best = torch.full((H, W), 2)
    best[5, :] = 4  # 8 px of class 4 (small at threshold 10)
    s = sem(best)
    a = box(0.6, 0, 4, 0, 4)  # 16 px, score 0.9: pasted first
    b = box(0.9, 2, 4, 2, 4)  # 4 px fully inside a: overlap 100% > 0.5 -> dropped
    c = box(0.9, 0, 4, 3, 6)  # 12 px, 3 px overlap with a (25%) -> kept with its free 9 px
    pan, info = kirillov_panoptic_merge(
        s,
        insts([a, b, c], [0.9, 0.8, 0.7], [0, 1, 1]),
        IS_THING,
        overlap_thresh=0.5,
        stuff_area_thresh=10,
    )
    check_consistent(pan, info)
    things = [(x["instance_id"], x["area"]) for x in info if x["isthing"]]
    assert things == [(0, 16), (2, 8)]  # c: 12 px minus 4 px of a (rows 0-3, col 3)
    cat = labels(pan, info)
    assert (cat[5] == -1).all()  # small stuff class 4 -> void (JSIS would give it class 2)
    assert [x["category_id"] for x in info if not x["isthing"]] == [2]
    pan2, info2 = jsis_panoptic_merge(
        s, insts([a, b, c], [0.9, 0.8, 0.7], [0, 1, 1]), IS_THING, stuff_area_thresh=10
    )
    assert (labels(pan2, info2)[5] == 2).all()


def test_kirillov_keeps_stuff_label_zero_when_there_are_no_things():
    s = torch.zeros(3, H, W)
    s[0] = 1.0
    pan, info = kirillov_panoptic_merge(
        s, insts([], [], []), [False, False, False], stuff_area_thresh=0
    )
    assert info == [{"id": 1, "isthing": False, "category_id": 0, "area": H * W}]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 30, 40, generator=g)
    m = torch.rand(4, 30, 40, generator=g)
    i = Instances(
        (30, 40),
        pred_masks=m,
        scores=torch.tensor([0.9, 0.8, 0.7, 0.6]),
        pred_classes=torch.tensor([0, 1, 0, 1]),
    )
    pan, info = jsis_panoptic_merge(s, i, IS_THING, stuff_area_thresh=50)
    pan_c, info_c = jsis_panoptic_merge(s.cuda(), i.to("cuda"), IS_THING, stuff_area_thresh=50)
    assert pan_c.is_cuda and torch.equal(pan, pan_c.cpu()) and info == info_c


# ------------------------------------------------------------------ the tensor-only core
def core_as_public(s, i, is_thing, area_thr, score_thr, mask_thr, uncovered_only):
    """jsis_merge_core called as the export graph calls it (an all-zero "no instance" row,
    no Python branch on the data) -> the public function's output format."""
    from jsis_d2.postprocessing import jsis_merge_core, merge_order

    order = merge_order(i.scores, score_thr)
    probs = torch.cat([i.pred_masks.float().index_select(0, order), torch.zeros(1, *s.shape[1:])])
    stuff = [k for k, t in enumerate(is_thing) if not t]
    pan, table, scores, rows = jsis_merge_core(
        s,
        probs,
        i.scores.index_select(0, order),
        i.pred_classes.index_select(0, order),
        stuff,
        stuff_area_thresh=area_thr,
        mask_threshold=mask_thr,
        uncovered_only=uncovered_only,
    )
    assert pan.dtype == torch.int32 and table.dtype == torch.long and scores.dtype == torch.float
    info = []
    for (sid, k, isthing, area), sc, r in zip(table.tolist(), scores.tolist(), rows.tolist()):
        d = {"id": sid, "category_id": k, "isthing": bool(isthing), "area": area}
        if isthing:
            d.update(score=sc, instance_id=int(order[r]))
        else:
            assert sc == 1.0 and r == -1
        info.append(d)
    return pan, info


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("uncovered_only", [False, True])
def test_core_equals_public_merge_on_random_cases(seed, uncovered_only):
    g = torch.Generator().manual_seed(100 + seed)
    K, h, w = 6, 10, 12
    n = [0, 0, 1, 3, 6, 9][seed % 6]  # zero instances included
    is_thing = [True, True, True, False, False, False]
    if seed % 3 == 2:
        is_thing = [False, True, False, True, True, False]
    thing_ids = torch.tensor([k for k in range(K) if is_thing[k]])
    s = torch.randint(0, 4, (K, h, w), generator=g).float()
    masks = torch.randint(0, 5, (n, h, w), generator=g).float() / 4
    scores = torch.randint(1, 5, (n,), generator=g).float() / 4  # ties, some below 0.5
    classes = thing_ids[torch.randint(0, 3, (n,), generator=g)]
    # 0: nothing small; 30, 60: small stuff classes fall back to big ones; 500: all small, void
    area_thr = [0, 30, 60, 500][seed % 4]
    i = insts(masks, scores, classes, h, w)
    want = jsis_panoptic_merge(
        s, i, is_thing, stuff_area_thresh=area_thr, instance_score_thresh=0.5, mask_threshold=0.5
    )
    got = core_as_public(s, i, is_thing, area_thr, 0.5, 0.5, uncovered_only)
    assert torch.equal(got[0], want[0]) and got[1] == want[1]


def test_core_small_stuff_fallback_takes_the_best_big_class():
    from jsis_d2.postprocessing import jsis_merge_core

    best = torch.full((H, W), 2)
    best[0, :3] = 4  # 3 px of class 4: small at threshold 5
    second = torch.full((H, W), 4)
    second[0, :3] = 3  # class 3 is second there, but class 3 is small too (0 px) -> not big
    s = sem(best, second)
    s[2, 0, :3] = 0.5  # big class 2 still scores above the others there
    pan, table, scores, rows = jsis_merge_core(
        s,
        torch.zeros(1, H, W),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.long),
        [2, 3, 4],
        stuff_area_thresh=5,
        mask_threshold=0.5,
    )
    assert table.tolist() == [[1, 2, 0, H * W]] and (pan == 1).all()
    assert scores.tolist() == [1.0] and rows.tolist() == [-1]


def test_merge_order_is_decreasing_score_then_lower_index():
    from jsis_d2.postprocessing import merge_order

    scores = torch.tensor([0.4, 0.9, 0.6, 0.9, 0.2, 0.6])
    assert merge_order(scores, 0.5).tolist() == [1, 3, 2, 5]
    assert merge_order(scores, 0.95).tolist() == []
    assert merge_order(torch.zeros(0), 0.5).tolist() == []
