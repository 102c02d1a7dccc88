"""JSISNet: weighted training losses per branch, lambda scaling, inference at the original
resolution, branch switches, config errors. Tiny quick config (R18, 64x64), CPU."""

import copy

import pytest
import torch

from jsis_d2.config import setup_cfg
from jsis_d2.modeling.meta_arch import LOSS_KEY_TO_WEIGHT, JSISNet, paste_mask_probs

from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

QUICK = "configs/quick/jsis_R18_C4_quick.yaml"
K, T = 9, 4
ALL_KEYS = set(LOSS_KEY_TO_WEIGHT)
INSTANCE_KEYS = ALL_KEYS - {"loss_sem_seg"}


def cfg_of(*opts):
    return setup_cfg(QUICK, list(opts))


def model_of(*opts, state=None):
    torch.manual_seed(0)
    m = build_model(cfg_of(*opts))
    if state is not None:
        m.load_state_dict(state)
    return m


def train_sample(seed, h=64, w=64):
    """A random image with a hand-made panoptic target: two things over random stuff."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    sem = torch.randint(T, K, (h, w), generator=g)
    sem[:4] = 255  # void
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 8:30, 6:40] = True
    masks[1, 34:60, 20:58] = True
    sem[masks[0]] = 0
    sem[masks[1]] = 3
    inst = Instances(
        (h, w),
        gt_boxes=BitMasks(masks).get_bounding_boxes(),
        gt_classes=torch.tensor([0, 3]),
        gt_masks=BitMasks(masks),
    )
    return {"image": img, "sem_seg": sem, "instances": inst, "height": h, "width": w}


def train_losses(model, seed=0):
    model.train()
    torch.manual_seed(123)  # RPN/ROI sampling and dropout
    with EventStorage():
        return model([train_sample(seed), train_sample(seed + 1)])


def test_registered():
    assert META_ARCH_REGISTRY.get("JSISNet") is JSISNet
    assert isinstance(model_of(), JSISNet)


@pytest.mark.parametrize(
    "branches,keys",
    [
        ('["semantic", "instance"]', ALL_KEYS),
        ('["semantic"]', {"loss_sem_seg"}),
        ('["instance"]', INSTANCE_KEYS),
    ],
)
def test_training_returns_exactly_the_branch_losses_and_backprops(branches, keys):
    model = model_of("MODEL.JSIS.BRANCHES", branches)
    losses = train_losses(model)
    assert set(losses) == keys
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if branches == '["semantic"]':
        assert model.proposal_generator is None and model.roi_heads is None
    if branches == '["instance"]':
        assert model.sem_seg_head is None


@pytest.fixture(scope="module")
def base_losses():
    model = model_of()
    return model.state_dict(), {k: v.detach() for k, v in train_losses(model).items()}


@pytest.mark.parametrize("loss_key", sorted(LOSS_KEY_TO_WEIGHT))
def test_changing_one_lambda_scales_exactly_its_loss(base_losses, loss_key):
    state, base = base_losses
    name = LOSS_KEY_TO_WEIGHT[loss_key]
    default = getattr(cfg_of().MODEL.JSIS.LOSS_WEIGHTS, name)
    model = model_of(f"MODEL.JSIS.LOSS_WEIGHTS.{name}", str(default * 3.0), state=state)
    losses = train_losses(model)
    for k, v in losses.items():
        expected = base[k] * 3.0 if k == loss_key else base[k]
        assert torch.allclose(v, expected, rtol=1e-5, atol=1e-7), k


def test_logged_losses_are_lambda_times_detectron2_losses(base_losses):
    state, base = base_losses
    ones = []
    for name in ("RPN_OBJ", "RPN_REG", "DET_CLS", "DET_REG", "MASK", "SEG"):
        ones += [f"MODEL.JSIS.LOSS_WEIGHTS.{name}", "1.0"]
    raw = train_losses(model_of(*ones, state=state))
    lam = cfg_of().MODEL.JSIS.LOSS_WEIGHTS
    assert (lam.DET_REG, lam.MASK) == (0.15, 0.3)  # paper Table 2
    for k, v in base.items():
        assert torch.allclose(v, raw[k] * lam[LOSS_KEY_TO_WEIGHT[k]], rtol=1e-5, atol=1e-7), k


def test_training_without_targets_names_the_missing_input():
    model = model_of().train()
    s = train_sample(0)
    with EventStorage():
        with pytest.raises(ValueError, match="needs 'sem_seg'"):
            model([{k: v for k, v in s.items() if k != "sem_seg"}])
        with pytest.raises(ValueError, match="needs 'instances'"):
            model([{k: v for k, v in s.items() if k != "instances"}])


def infer(model, inputs, **kw):
    model.eval()
    with torch.no_grad():
        return model.inference(inputs, **kw)


def test_inference_outputs_at_original_resolution():
    # score threshold 0 so that the untrained model's detections reach the merge
    model = model_of(
        "MODEL.JSIS.INSTANCE_SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"
    )
    g = torch.Generator().manual_seed(5)
    inputs = [
        {
            "image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g),
            "height": 90,
            "width": 50,
        },
        {
            "image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g),
            "height": 37,
            "width": 121,
        },
    ]
    outs = infer(model, inputs)
    assert len(outs) == 2
    for out, inp in zip(outs, inputs):
        h, w = inp["height"], inp["width"]
        assert set(out) == {"sem_seg", "instances", "proposals", "panoptic_seg"}
        assert out["sem_seg"].shape == (K, h, w) and out["sem_seg"].dtype == torch.float32
        inst = out["instances"]
        assert inst.image_size == (h, w) and len(inst) > 0
        assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (len(inst), h, w)
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < T)).all()
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        prop = out["proposals"]
        assert prop.image_size == (h, w) and prop.has("objectness_logits") and len(prop) > 0
        pb = prop.proposal_boxes.tensor
        assert (pb[:, 2] <= w).all() and (pb[:, 3] <= h).all()
        pan, info = out["panoptic_seg"]
        assert pan.shape == (h, w) and pan.dtype == torch.int32
        assert set(torch.unique(pan).tolist()) - {0} == {s["id"] for s in info}
        for s in info:
            assert s["area"] == int((pan == s["id"]).sum())
            assert s["isthing"] == (s["category_id"] < T)
            if s["isthing"]:  # the segment is inside that instance's returned bool mask
                assert inst.pred_masks[s["instance_id"]][pan == s["id"]].all()
                assert s["score"] == pytest.approx(float(inst.scores[s["instance_id"]]))


def test_inference_without_postprocess_and_kirillov_merge():
    model = model_of(
        "MODEL.JSIS.MERGE",
        "kirillov",
        "MODEL.JSIS.INSTANCE_SCORE_THRESH",
        "0.0",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
    )
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    raw = infer(model, [{"image": img, "height": 30, "width": 20}], do_postprocess=False)[0]
    assert raw["sem_seg"].shape == (K, 64, 64)
    assert raw["instances"].image_size == (64, 64) and raw["instances"].pred_masks.dim() == 4
    pan, info = infer(model, [{"image": img, "height": 30, "width": 20}])[0]["panoptic_seg"]
    assert pan.shape == (30, 20)
    assert all(s["area"] == int((pan == s["id"]).sum()) for s in info)


@pytest.mark.parametrize(
    "branches,keys",
    [('["semantic"]', {"sem_seg"}), ('["instance"]', {"instances", "proposals"})],
)
def test_single_branch_inference_keys(branches, keys):
    model = model_of("MODEL.JSIS.BRANCHES", branches)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    out = infer(model, [{"image": img, "height": 40, "width": 70}])[0]
    assert set(out) == keys
    if "sem_seg" in out:
        assert out["sem_seg"].shape == (K, 40, 70)


def test_instance_postprocess_scales_x_and_y_separately_and_keeps_probabilities():
    model = model_of().eval()
    raw = Instances(
        (64, 64),
        pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 32.0, 32.0], [32.0, 16.0, 64.0, 48.0]])),
        scores=torch.tensor([0.9, 0.3]),
        pred_classes=torch.tensor([1, 2]),
        pred_masks=torch.stack([torch.full((1, 14, 14), 0.7), torch.full((1, 14, 14), 0.4)]),
    )
    model.instance_score_thresh = 0.5
    r, probs, keep = model.postprocess_instances(copy.deepcopy(raw), 128, 96)  # H x2, W x1.5
    assert keep.tolist() == [0] and probs.shape == (1, 128, 96)  # score 0.3 < 0.5: no merge
    model.instance_score_thresh = 0.0
    r, probs, keep = model.postprocess_instances(raw, 128, 96)
    assert keep.tolist() == [0, 1] and r.image_size == (128, 96)
    assert torch.allclose(r.pred_boxes.tensor, torch.tensor([[0, 0, 48, 64], [48, 32, 96, 96.0]]))
    m0 = r.pred_masks[0]
    assert m0[2:62, 2:46].all() and not m0[64:].any() and not m0[:, 48:].any()
    assert not r.pred_masks[1].any()  # 0.4 < MASK_THRESHOLD
    assert probs.dtype == torch.float32 and torch.allclose(
        probs[1, 40:90, 50:90], torch.tensor(0.4)
    )
    assert torch.allclose(probs[0, 5:60, 5:40], torch.tensor(0.7))


def test_paste_mask_probs_matches_detectron2_paste_when_thresholded():
    from detectron2.layers import paste_masks_in_image

    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 14, 14, generator=g)
    b = torch.tensor([[2.0, 3.0, 30.0, 20.0], [0.0, 0.0, 40.0, 40.0], [10.5, 5.2, 33.1, 38.9]])
    probs = paste_mask_probs(m, b, 41, 37)
    assert probs.shape == (3, 41, 37) and probs.max() <= 1 and probs.min() >= 0
    assert torch.equal(probs >= 0.5, paste_masks_in_image(m, Boxes(b), (41, 37), 0.5))


@pytest.mark.parametrize(
    "opts,match",
    [
        (["MODEL.JSIS.BRANCHES", "[]"], r"non-empty list.*got \[\]"),
        (["MODEL.JSIS.BRANCHES", '["semantic", "panoptic"]'], r"unknown: \['panoptic'\]"),
        (["MODEL.JSIS.BRANCHES", '["instance", "instance"]'], "distinct"),
        (["MODEL.JSIS.MERGE", "nms"], "MODEL.JSIS.MERGE must be one of"),
        (["MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "2.0"], "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 2.0"),
        (["MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", "0.5"], "BBOX_REG_LOSS_WEIGHT = 0.5"),
        (["MODEL.MASK_ON", "False"], "MODEL.MASK_ON must be True"),
        (["MODEL.ROI_HEADS.NUM_CLASSES", "12"], r"T=12\) must be <=.*K=9"),
    ],
)
def test_bad_configs_raise_clear_errors(opts, match):
    with pytest.raises(ValueError, match=match):
        build_model(cfg_of(*opts))


def test_panoptic_needs_both_branches_and_can_be_switched_off():
    assert not model_of("MODEL.JSIS.BRANCHES", '["semantic"]').panoptic_on
    m = model_of("MODEL.JSIS.PANOPTIC_ON", "False")
    out = infer(m, [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])[0]
    assert "panoptic_seg" not in out and out["sem_seg"].shape == (K, 64, 64)
    assert copy.deepcopy(m.is_thing).tolist() == [True] * T + [False] * (K - T)


def test_inference_when_no_instance_reaches_the_merge():
    model = model_of("MODEL.JSIS.INSTANCE_SCORE_THRESH", "1.0", "MODEL.JSIS.STUFF_AREA_THRESH", "0")
    out = infer(
        model, [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 33, "width": 47}]
    )[0]
    pan, info = out["panoptic_seg"]
    assert pan.shape == (33, 47) and info and all(not s["isthing"] for s in info)
    assert sum(s["area"] for s in info) == 33 * 47  # no void: every pixel has a stuff class
    assert out["instances"].pred_masks.dtype == torch.bool


def test_separable_roi_align_key_swaps_the_poolers_and_keeps_losses_and_gradients():
    """MODEL.JSIS.SEPARABLE_ROI_ALIGN (default on): the ROI heads pool with the separable op in
    training; off: Detectron2's ROIAlign. Same losses and backbone gradient either way."""
    from jsis_d2.modeling.roi_align import SeparableROIAlign

    from detectron2.layers import ROIAlign

    on = model_of()
    off = model_of("MODEL.JSIS.SEPARABLE_ROI_ALIGN", "False", state=on.state_dict())
    assert all(type(p) is SeparableROIAlign for p in on.roi_heads.pooler.level_poolers)
    assert all(type(p) is ROIAlign for p in off.roi_heads.pooler.level_poolers)
    grads = []
    for m in (on, off):
        losses = train_losses(m)
        sum(losses.values()).backward()
        grads.append((losses, m.backbone.stem.conv1.weight.grad.clone()))
    for k in grads[0][0]:
        torch.testing.assert_close(grads[0][0][k], grads[1][0][k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-3, atol=1e-5)


def test_merge_registry_picks_the_merge_by_name():
    from jsis_d2.modeling.merges import PANOPTIC_MERGE_REGISTRY

    calls = []

    @PANOPTIC_MERGE_REGISTRY.register()
    def everything_void(sem_seg, instances, is_thing, **settings):
        calls.append(sorted(settings))
        return torch.zeros(sem_seg.shape[1:], dtype=torch.int32), []

    try:
        model = model_of("MODEL.JSIS.MERGE", "everything_void")
        out = infer(model, [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 20}])
        pan, info = out[0]["panoptic_seg"]
        assert info == [] and pan.shape == (20, 64) and not pan.any()
        assert calls == [
            ["instance_score_thresh", "mask_threshold", "overlap_thresh", "stuff_area_thresh"]
        ]
    finally:
        PANOPTIC_MERGE_REGISTRY._obj_map.pop("everything_void")


def test_postprocess_instances_masks_equal_detectron2_paste():
    """Masks are pasted once: the bool masks are the pasted probabilities thresholded, equal
    to Detectron2's paste_masks_in_image; the merge's probabilities are the same paste."""
    from detectron2.layers import paste_masks_in_image

    model = model_of().eval()
    g = torch.Generator().manual_seed(0)
    roi = torch.rand(3, 1, 14, 14, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0], [0.0, 0.0, 60.0, 61.0], [10.5, 5.2, 33.1, 38.9]])
    raw = Instances(
        (64, 64),
        pred_boxes=Boxes(boxes),
        scores=torch.tensor([0.9, 0.3, 0.7]),
        pred_classes=torch.tensor([1, 2, 0]),
        pred_masks=roi,
    )
    model.instance_score_thresh, model.mask_threshold = 0.5, 0.5
    r, probs, keep = model.postprocess_instances(raw, 80, 50, merge_probs=True)
    want = paste_masks_in_image(roi[:, 0], r.pred_boxes, (80, 50), threshold=0.5)
    assert r.pred_masks.dtype == torch.bool and torch.equal(r.pred_masks, want)
    assert keep.tolist() == [0, 2] and torch.equal(probs >= 0.5, want[[0, 2]])
